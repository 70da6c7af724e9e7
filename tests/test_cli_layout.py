"""The `deepfaas` CLI is its own package: a client of the HTTP API that loads no gateway route and
no function code, with one command tree and one KEY=VALUE parser."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import typer

from cli.common import parse_pairs
from cli.main import app

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("gateway.routes", "functions")

#: every command the README, the docs, the manifests and the tests use (none may go)
COMMANDS = {
    "activation get", "activation list", "activation logs", "activation result",
    "auth key create", "auth key list", "auth key revoke", "bootstrap",
    "bucket create", "bucket delete", "bucket list", "controller", "deliverer",
    "deploy create", "deploy delete", "deploy get", "deploy list", "dispatcher",
    "deployment create", "deployment delete", "deployment get", "deployment list",
    "dlq delete", "dlq get", "dlq list", "dlq replay", "download", "events tail",
    "fn delete", "fn deploy", "fn get", "fn invoke", "fn list", "gateway", "ls",
    "model get", "model list", "model predict", "model promote", "model publish",
    "model retire", "model rollback", "model train", "model versions",
    "status", "storage-bridge", "sub create", "sub delete", "sub get", "sub list",
    "trigger create", "trigger delete", "trigger disable", "trigger enable", "trigger get",
    "trigger list", "up", "upload",
}  # fmt: skip


def _forbidden(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in FORBIDDEN)


def test_no_cli_module_names_a_route_or_a_function() -> None:
    named = []
    for path in sorted((ROOT / "cli").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                named += [(path.name, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                named.append((path.name, node.module))
    assert any(module == "cli.common" for _, module in named)  # the reader sees imports
    assert [(file, module) for file, module in named if _forbidden(module)] == []


def test_loading_every_command_loads_no_route_and_no_function() -> None:
    probe = (
        "import json, pkgutil, importlib, sys, cli\n"
        "for info in pkgutil.iter_modules(cli.__path__):\n"
        "    if info.name != '__main__':\n"
        "        importlib.import_module(f'cli.{info.name}')\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = json.loads(run.stdout)
    assert "cli.main" in loaded and "cli.processes" in loaded
    assert [m for m in loaded if _forbidden(m)] == []


def _paths(command: object, prefix: str = "") -> set[str]:
    children = getattr(command, "commands", {})
    if not children:
        return {prefix.strip()}
    return set().union(*(_paths(sub, f"{prefix} {name}") for name, sub in children.items()))


def test_every_command_is_there() -> None:
    assert _paths(typer.main.get_command(app)) == COMMANDS


def test_deploy_means_registering_a_function_and_the_old_group_name_is_hidden() -> None:
    listed = {c.name for c in typer.main.get_command(app).commands.values() if not c.hidden}
    assert "deployment" in listed and "deploy" not in listed


def test_the_console_script_runs_the_package() -> None:
    [script] = entry_points(group="console_scripts", name="deepfaas")
    assert script.value == "cli.main:main"


def test_key_value_options_parse_in_one_place() -> None:
    assert parse_pairs(["a=1", "b=x=y", "c=", "d=[1]"], "--param", json_values=True) == {
        "a": 1, "b": "x=y", "c": "", "d": [1],
    }  # fmt: skip
    assert parse_pairs(["A=1", "B=true"], "--env") == {"A": "1", "B": "true"}
    assert parse_pairs(None, "--env") == {}
    for bad in ("novalue", "=x"):
        with pytest.raises(typer.BadParameter, match=f"--header takes NAME=VALUE, not '{bad}'"):
            parse_pairs([bad], "--header", key="NAME")
