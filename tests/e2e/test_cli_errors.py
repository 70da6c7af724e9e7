"""Mistakes a new user makes get one clear line, not a traceback; `up` stops on SIGTERM even
while an event stream is open (issue 12)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.support import Platform, embedded_nats, start_platform

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`deepfaas ...` as a user runs it, from ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_missing_spec_file_is_one_line(tmp_path: Path) -> None:
    run = cli("fn", "deploy", "x", "--spec", "nowhere/function.yaml", cwd=tmp_path)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    [line] = run.stderr.strip().splitlines()
    assert "nowhere/function.yaml" in line and "no such file" in line


def test_a_spec_that_is_not_yaml_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: [")
    run = cli("fn", "deploy", "x", "--spec", "bad.yaml", cwd=tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    [line] = run.stderr.strip().splitlines()
    assert "not valid YAML" in line


def test_a_built_in_spec_deploys_from_any_folder(platform: Platform, tmp_path: Path) -> None:
    run = cli(
        "fn", "deploy", "thumbnail", "--spec", "functions/thumbnail/function.yaml",
        "--url", platform.url, "--json",
        cwd=tmp_path, DEEPFAAS_AUTH=platform.auth,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert '"handler": "functions.thumbnail.handler:handle"' in run.stdout


def test_bridge_events_without_s3_stop_up_with_one_line(tmp_path: Path) -> None:
    run = cli(
        "up",
        cwd=tmp_path,
        DEEPFAAS_STORAGE_EVENTS="bridge",
        DEEPFAAS_DATA_DIR=str(tmp_path / "data"),
    )
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    [line] = run.stderr.strip().splitlines()
    assert "storage_events=bridge" in line and "s3" in line


def test_a_log_level_is_read_in_any_case_and_a_bad_one_is_one_line(tmp_path: Path) -> None:
    bad = cli("up", cwd=tmp_path, DEEPFAAS_LOG_LEVEL="chatty", DEEPFAAS_DATA_DIR=str(tmp_path))
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    [line] = bad.stderr.strip().splitlines()
    assert "DEEPFAAS_LOG_LEVEL" in line and "'CHATTY'" in line
    # lower case is accepted: `up` gets past logging to the settings (a bad port stops it)
    run = cli("up", cwd=tmp_path, DEEPFAAS_LOG_LEVEL="debug", DEEPFAAS_PORT="port")
    assert run.returncode != 0 and "Traceback" not in run.stderr
    [line] = run.stderr.strip().splitlines()
    assert "DEEPFAAS_PORT" in line


def test_up_stops_on_sigterm_while_a_stream_is_open(tmp_path: Path) -> None:
    data = tmp_path / "data"
    platform = start_platform(embedded_nats(data), data)
    opened = threading.Event()

    def follow() -> None:
        try:
            with (
                platform.client(timeout=60) as client,
                client.stream("GET", "/v1/events/stream") as response,
            ):
                for _ in response.iter_bytes():
                    opened.set()
        except httpx.HTTPError:
            pass

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    try:
        assert opened.wait(15), "the stream did not open"
        started = time.monotonic()
        platform.process.terminate()
        platform.process.wait(20)
        assert time.monotonic() - started < 20
    finally:
        platform.stop()
    reader.join(10)
