"""OSCAR's users work unchanged: the real `oscar-python` client against a running platform.

A service made from an FDL dict is a script function run in the sandbox: an upload to its
input path runs the script, whose output file lands in the output path; `run_service` runs it
synchronously, `async_call=True` as a job whose logs the client reads. Another namespace's
key sees none of it.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import yaml
from oscar_python.client import Client

from tests.support import Platform, wait_for

TENANT = "oscar-tenant"
SCRIPT = """#!/bin/sh
echo "processing $STORAGE_OBJECT_KEY"
name=$(basename "$INPUT_FILE_PATH" .txt)
tr a-z A-Z < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$name.up"
echo "greeting is $GREETING" >&2
"""


def fdl(name: str, script: str = SCRIPT, bucket: str = "oscar-in") -> dict[str, Any]:
    """A service as an FDL file defines it (what `oscar-python` sends)."""
    return {
        "name": name,
        "image": "ghcr.io/grycap/alpine",
        "script": script,
        "memory": "256Mi",
        "cpu": "0.5",
        "environment": {"variables": {"GREETING": "hola"}},
        "input": [
            {"storage_provider": "minio.default", "path": f"{bucket}/in", "suffix": [".txt"]}
        ],
        "output": [{"storage_provider": "minio.default", "path": "oscar-out/results"}],
    }


def oscar_client(platform: Platform, auth: str | None = None) -> Client:
    key_id, _, secret = (auth or platform.auth).partition(":")
    return Client(
        {
            "cluster_id": "deepfaas",
            "endpoint": platform.url,
            "user": key_id,
            "password": secret,
            "ssl": False,
        }
    )


@pytest.fixture(scope="module")
def oscar(platform: Platform) -> Iterator[Client]:
    client = oscar_client(platform)
    client.create_service(fdl("upper"))
    yield client
    client.remove_service("upper")


@pytest.fixture(scope="module")
def tenant_key(platform: Platform) -> str:
    with platform.client() as admin:
        r = admin.post("/v1/auth/keys", json={"namespace": TENANT})
    assert r.status_code == 201, r.text
    key: str = r.json()["key"]
    return key


def _object(client: httpx.Client, bucket: str, key: str) -> bytes | None:
    r = client.get(f"/v1/buckets/{bucket}/objects/{key}")
    return r.content if r.status_code == 200 else None


def _processed(client: httpx.Client, key: str, result: str) -> bytes | None:
    """The result of ``key``, uploading it again while there is none: the dispatcher learns of
    a new trigger through a KV watch, and an upload it saw before that does not match."""
    found = _object(client, "oscar-out", result)
    if found is None:
        assert client.put(f"/v1/buckets/oscar-in/objects/{key}", content=b"hello").is_success
    return found


def _status(error: requests.HTTPError) -> int | None:
    return error.response.status_code if error.response is not None else None


def _job_status(oscar: Client, service: str, job: str) -> str | None:
    jobs = oscar.list_jobs(service).json()["jobs"]
    status = jobs.get(job, {}).get("status")
    return status if status in ("Succeeded", "Failed") else None


def test_service_from_fdl_processes_uploads(oscar: Client, client: httpx.Client) -> None:
    info = oscar.get_cluster_info().json()
    assert info["serverless_backend"]["name"] == "deepfaas"
    config = oscar.get_cluster_config().json()
    assert config["minio_provider"]["secret_key"] == ""  # never a secret
    assert "upper" in [s["name"] for s in oscar.list_services().json()]
    service = oscar.get_service("upper").json()
    assert service["image"] == "ghcr.io/grycap/alpine" and len(service["token"]) == 64
    assert service["environment"]["variables"] == {"GREETING": "hola"}
    fn = client.get("/v1/functions/upper").json()  # what the service became
    assert (fn["script"], fn["memory_mb"], fn["cpu"], fn["max_attempts"]) == (SCRIPT, 256, 0.5, 1)
    trigger = client.get("/v1/triggers/upper-input-0").json()
    assert (trigger["function"], trigger["bucket"], trigger["key_prefix"]) == (
        "upper",
        "oscar-in",
        "in/",
    )

    assert client.put("/v1/buckets/oscar-in/objects/in/skip.csv", content=b"no").is_success
    out = wait_for(
        lambda: _processed(client, "in/hello.txt", "results/hello.up"), timeout=90, interval=2
    )
    assert out == b"HELLO"
    assert _object(client, "oscar-out", "results/skip.up") is None  # the suffix filter

    jobs = oscar.list_jobs("upper").json()["jobs"]
    assert jobs and {j["status"] for j in jobs.values()} == {"Succeeded"}
    logs = oscar.get_job_logs("upper", next(iter(jobs))).text
    assert "processing in/hello.txt" in logs and "greeting is hola" in logs


def test_run_sync_and_as_job(oscar: Client, client: httpx.Client) -> None:
    r = oscar.run_service("upper", input="sync input")  # base64, as OSCAR's client sends it
    assert base64.b64decode(r.text) == b"SYNC INPUT"

    r = oscar.run_service("upper", input="job input", async_call=True)
    assert r.status_code == 201
    job = r.headers["X-Activation-Id"]
    assert wait_for(lambda: _job_status(oscar, "upper", job), timeout=90) == "Succeeded"
    assert _object(client, "oscar-out", "results/event-file.up") == b"JOB INPUT"
    assert "greeting is hola" in oscar.get_job_logs("upper", job).text
    oscar.remove_job("upper", job)
    assert job not in oscar.list_jobs("upper").json()["jobs"]


def test_failing_script_is_a_failed_job(oscar: Client, client: httpx.Client) -> None:
    oscar.create_service(fdl("fails", script="echo about to fail\nexit 3\n"))
    try:
        job = oscar.run_service("fails", input="x", async_call=True).headers["X-Activation-Id"]
        assert wait_for(lambda: _job_status(oscar, "fails", job), timeout=90) == "Failed"
        logs = oscar.get_job_logs("fails", job).text
        assert "about to fail" in logs and "exited with status 3" in logs
        again = client.post("/system/services", json=fdl("fails"))  # the client checks first
        assert again.status_code == 409 and "already exists" in again.text
        changed = fdl("fails", script="echo fixed\n")
        changed["environment"]["variables"]["GREETING"] = "adios"
        assert oscar.update_service("fails", changed).status_code == 204
        assert oscar.get_service("fails").json()["environment"]["variables"]["GREETING"] == "adios"
        assert client.get("/v1/functions/fails").json()["version"] == 2
        # warm workers of version 1 are replaced as the new version's come up
        assert wait_for(lambda: client.post("/run/fails", content=b"eA==").text == "fixed\n")
        oscar.remove_all_jobs("fails")  # the finished ones
        assert oscar.list_jobs("fails").json()["jobs"] == {}
    finally:
        oscar.remove_service("fails")
    with pytest.raises(requests.HTTPError) as gone:
        oscar.get_service("fails")
    assert _status(gone.value) == 404


def test_bad_fdl_is_plain_400(platform: Platform) -> None:
    with platform.client() as c:
        r = c.post("/system/services", json={"name": "x", "script": "true"})
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/plain")
    assert "image" in r.text


def test_another_namespace_sees_nothing(oscar: Client, platform: Platform, tenant_key: str) -> None:
    tenant = oscar_client(platform, tenant_key)
    assert tenant.list_services().json() == []
    calls: tuple[Callable[[], object], ...] = (
        lambda: tenant.get_service("upper"),
        lambda: tenant.list_jobs("upper"),
        lambda: tenant.remove_service("upper"),
        lambda: tenant.run_service("upper", input="x", token=None),
    )
    for call in calls:
        with pytest.raises(requests.HTTPError) as refused:
            call()
        assert _status(refused.value) == 404
    token = oscar.get_service("upper").json()["token"]
    with httpx.Client(base_url=platform.url) as anonymous:
        assert anonymous.post("/run/upper", content=b"eA==").status_code == 401
        wrong = anonymous.post(
            "/run/other", content=b"eA==", headers={"authorization": f"Bearer {token}"}
        )
        assert wrong.status_code == 401
        ok = anonymous.post(
            "/run/upper", content=b"eA==", headers={"authorization": f"Bearer {token}"}
        )
        assert ok.status_code == 200 and base64.b64decode(ok.text) == b"X"
    with pytest.raises(requests.HTTPError) as taken:  # the input bucket is the default's
        tenant.create_service(fdl("mine"))
    assert _status(taken.value) == 403


def test_script_function_from_the_cli_runs_in_the_sandbox(
    platform: Platform, client: httpx.Client, tmp_path: Path
) -> None:
    script = tmp_path / "probe.sh"
    script.write_text(
        f'test -e "{platform.data_dir}" && echo "data dir visible" || echo "data dir hidden"\n'
        'echo "uid $(id -u) input $(cat "$INPUT_FILE_PATH")"\n'
    )
    run = subprocess.run(
        [sys.executable, "-m", "cli", "fn", "deploy", "probe", "--script", str(script)],
        env={**os.environ, "DEEPFAAS_URL": platform.url, "DEEPFAAS_AUTH": platform.auth},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    spec = client.get("/v1/functions/probe").json()
    assert spec["handler"] == "runtimes.worker.script:run" and spec["script"] == script.read_text()
    r = client.post("/v1/functions/probe/invoke", json={"n": 1})
    assert r.status_code == 200, r.text
    assert r.json().startswith("data dir hidden\nuid ")
    assert 'input {"n":1}' in r.json() and "uid 0 " not in r.json()
    client.delete("/v1/functions/probe")


def test_a_script_past_its_timeout_is_ended(client: httpx.Client) -> None:
    r = client.put(
        "/v1/functions/sleeper", json={"script": "sleep 30 &\nsleep 30\n", "timeout_s": 1}
    )
    assert r.status_code == 201, r.text
    try:
        r = client.post("/v1/functions/sleeper/invoke", json={})
        assert r.status_code == 504 and "timeout of 1 s" in r.json()["detail"]
    finally:
        client.delete("/v1/functions/sleeper")


def test_service_from_an_fdl_file(oscar: Client, tmp_path: Path) -> None:
    (tmp_path / "script.sh").write_text('echo "from a file: $GREETING"\n')
    (tmp_path / "fdl.yaml").write_text(
        yaml.safe_dump(
            {
                "functions": {
                    "oscar": [
                        {
                            "deepfaas": {
                                "name": "from-file",
                                "image": "ghcr.io/grycap/alpine",
                                "script": "script.sh",
                                "cpu": 1,
                                "memory": "1Gi",
                                "environment": {"variables": {"GREETING": "hi"}},
                            }
                        }
                    ]
                }
            }
        )
    )
    oscar.create_service(str(tmp_path / "fdl.yaml"))  # as `oscar-python` reads FDL files
    try:
        assert oscar.get_service("from-file").json()["cpu"] == "1"
        assert oscar.run_service("from-file", input="x").text == "from a file: hi\n"
    finally:
        oscar.remove_service("from-file")
