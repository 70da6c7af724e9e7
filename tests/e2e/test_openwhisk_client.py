"""The official OpenWhisk JavaScript client (npm `openwhisk`) drives our gateway unchanged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import Platform

HERE = Path(__file__).parent / "openwhisk_js"


def npm_ci() -> None:
    """Install the pinned client into the test's own folder (no global install)."""
    result = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if result.returncode != 0:
        pytest.fail(f"npm ci failed:\n{result.stdout}\n{result.stderr}")


def test_the_openwhisk_js_client_works_against_the_gateway(platform: Platform) -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed: cannot run the official OpenWhisk JS client")
    npm_ci()
    env = {**os.environ, "OW_APIHOST": platform.url, "OW_AUTH": platform.auth}
    result = subprocess.run(
        ["node", "drive.js"], cwd=HERE, env=env, capture_output=True, text=True, timeout=150
    )
    assert result.returncode == 0, result.stdout + result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["created"] == {"name": "js-hello", "version": "0.0.1", "kind": "python:3"}
    assert found["blocking"] == {"greeting": "Hello, Blocking!"}
    assert found["activation"] == {
        "name": "js-hello",
        "success": True,
        "result": {"greeting": "Hello, Later!"},
    }
    assert any("hello from js Later" in line for line in found["logs"])
    assert found["fired"]
    assert found["firedActivation"]["result"] == {"greeting": "Hello, Fired!"}
    assert found["rules"] == ["js-rule"]
    assert found["disabled"] == "inactive"
    assert found["packaged"] == {"greeting": "Hello, Package!"}
    assert found["bound"] == {"greeting": "Hello, Binding!"}
    assert found["packageActions"] == ["hello"]
    assert found["packages"] == ["js-bind", "js-pkg"]
    assert found["sequence"] == {"result": {"n": 4}, "components": 3}
    assert found["sequenceKind"] == "sequence"
    assert found["actionCount"] == {"actions": 4}  # js-hello, js-pkg/hello, js-inc, js-seq
    assert found["activationCount"] == {"activations": 3}
    assert found["packageCount"] == {"packages": 2}
    # the real message, not "Response Missing Error Message."
    assert found["notFound"]["statusCode"] == 404
    assert "js-no-such-action" in found["notFound"]["message"]
    assert "does not exist" in found["notFound"]["message"]
    assert found["conflict"]["statusCode"] == 409
    assert "exists already" in found["conflict"]["message"]
