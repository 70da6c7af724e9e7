"""`deepfaas fn`: register, list, inspect, delete and invoke functions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from cli.common import (
    DEFAULT_URL,
    JSON,
    URL,
    call,
    check,
    client,
    console,
    delete,
    emit,
    fail,
    parse_pairs,
    say,
    show,
    table,
)

fn_app = typer.Typer(
    help="Register, list, inspect, delete and invoke functions.", no_args_is_help=True
)

#: where the built-in functions' specs live (`functions/<name>/function.yaml` from any folder)
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def read_text(path: Path, option: str) -> str:
    """A file named on the command line; a missing one is a one-line error, not a traceback."""
    tried = [path]
    if not path.is_absolute():
        tried.append(PROJECT_ROOT / path)
    for candidate in tried:
        if candidate.is_file():
            try:
                return candidate.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                fail(f"{option} {candidate}: {exc}")
    where = " or ".join(str(p.absolute()) for p in tried)
    fail(f"{option} {path}: no such file (looked for {where})")


def read_spec(path: Path) -> dict[str, Any]:
    """A function.yaml as a mapping (one-line errors for a missing file or bad YAML)."""
    try:
        spec = yaml.safe_load(read_text(path, "--spec"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        fail(f"--spec {path} is not valid YAML{at}: {problem}")
    if spec is not None and not isinstance(spec, dict):
        fail(f"--spec {path} must hold a mapping of function fields")
    return spec or {}


@fn_app.command("deploy")
def fn_deploy(
    name: Annotated[str, typer.Argument(help="function name")],
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Python file with the handler")
    ] = None,
    handler: Annotated[
        str, typer.Option(help="`function` in --file, or `module:function`")
    ] = "main",
    spec_file: Annotated[
        Path | None, typer.Option("--spec", help="function.yaml to start from")
    ] = None,
    script: Annotated[
        Path | None,
        typer.Option("--script", help="shell script run with /bin/sh (OSCAR's `script`)"),
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="seconds")] = None,
    memory: Annotated[int | None, typer.Option(help="MB")] = None,
    concurrency: Annotated[int | None, typer.Option()] = None,
    min_scale: Annotated[int | None, typer.Option()] = None,
    max_scale: Annotated[int | None, typer.Option()] = None,
    gpu: Annotated[int | None, typer.Option()] = None,
    network: Annotated[
        str | None, typer.Option(help="`egress` (default) or `none`: no network at all")
    ] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE")] = None,
    url: URL = DEFAULT_URL,
    as_json: JSON = False,
) -> None:
    """Create or update a function (an update bumps its version)."""
    body: dict[str, Any] = {}
    if spec_file is not None:
        body.update(read_spec(spec_file))
    if script is not None:
        body["script"] = read_text(script, "--script")
        body.pop("code", None)
        body.pop("handler", None)
    elif file is not None:
        body["code"] = read_text(file, "--file")
        body["handler"] = handler
    elif "handler" not in body and "script" not in body:
        body["handler"] = handler
    options = {
        "timeout_s": timeout,
        "memory_mb": memory,
        "concurrency": concurrency,
        "min_scale": min_scale,
        "max_scale": max_scale,
        "gpu": gpu,
        "network": network,
    }
    body.update({k: v for k, v in options.items() if v is not None})
    if env:
        body["env"] = {**body.get("env", {}), **parse_pairs(env, "--env")}
    body.pop("name", None)
    with console.status(f"deploying {name}…"):
        spec = call(url, "PUT", f"/v1/functions/{name}", json=body)
    say(spec, as_json, f"[green]deployed[/green] {spec['name']} version {spec['version']}")


@fn_app.command("list")
def fn_list(url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """Every function."""
    table(
        call(url, "GET", "/v1/functions"),
        as_json,
        ("name", "version", "handler", "timeout", "concurrency", "scale"),
        lambda s: (
            s["name"],
            str(s["version"]),
            s["handler"],
            f"{s['timeout_s']:g}s",
            str(s["concurrency"]),
            f"{s['min_scale']}..{s['max_scale']}",
        ),
    )


@fn_app.command("get")
def fn_get(name: str, url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """One function's spec."""
    show(url, f"/v1/functions/{name}", as_json)


@fn_app.command("delete")
def fn_delete(name: str, url: URL = DEFAULT_URL) -> None:
    """Delete a function and its queued invocations."""
    delete(url, f"/v1/functions/{name}", f"deleted {name}")


@fn_app.command("invoke")
def fn_invoke(
    name: str,
    data: Annotated[str, typer.Option("--data", "-d", help="JSON input, or @file")] = "{}",
    run_async: Annotated[
        bool, typer.Option("--async", help="return the activation id at once")
    ] = False,
    timeout: Annotated[float | None, typer.Option(help="longest wait, seconds")] = None,
    url: URL = DEFAULT_URL,
    as_json: JSON = False,
) -> None:
    """Invoke a function and print its result (or the activation id with --async)."""
    body = Path(data[1:]).read_bytes() if data.startswith("@") else data.encode()
    params: dict[str, Any] = {"async": "true"} if run_async else {}
    if timeout:
        params["timeout"] = timeout
    with client(url, timeout=(timeout or 60) + 15) as c, console.status(f"invoking {name}…"):
        response = c.post(
            f"/v1/functions/{name}/invoke",
            content=body,
            params=params,
            headers={"content-type": "application/json"},
        )
    value = check(response)
    if response.status_code == 202 and not as_json:
        console.print(f"accepted: activation [bold]{value['activation_id']}[/bold]")
        return
    emit(value, as_json)
