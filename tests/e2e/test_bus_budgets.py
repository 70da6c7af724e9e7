"""Tiny disk budgets: the invocation queue at its limit refuses new work with 503 and loses
nothing it accepted; events at theirs drop their oldest; usage shows in /metrics and status."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from eventbus.server import EmbeddedNats
from tests.e2e.functions import SLEEPY
from tests.e2e.test_faults import ready_instances
from tests.e2e.test_invoke import deploy
from tests.support import Platform, start_platform, wait_activation, wait_for

#: about a dozen invocations fit in the queue; EVENTS holds a few dozen completions
BUDGETS = {"INVOCATIONS": 6000, "EVENTS": 16384}


@pytest.fixture(scope="module")
def budgeted(
    nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    started = start_platform(
        nats_server,
        Path(tmp_path_factory.mktemp("budgets")),
        nats_budgets=orjson.dumps(BUDGETS).decode(),
    )
    yield started
    started.stop()


def _metric(text: str, name: str, stream: str) -> float:
    prefix = f'{name}{{stream="{stream}"}} '
    [line] = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(line.removeprefix(prefix))


def test_a_full_queue_refuses_with_503_and_loses_nothing(budgeted: Platform) -> None:
    with budgeted.client() as client:
        deploy(client, "slowq", SLEEPY, min_scale=1, max_scale=1, concurrency=1)
        ready_instances(client, "slowq")
        invoke = "/v1/functions/slowq/invoke?async=true"
        answers = [client.post(invoke, json={"s": 0.2, "i": i}) for i in range(40)]
        codes = {r.status_code for r in answers}
        assert codes == {202, 503}, [r.text for r in answers if r.status_code not in (202, 503)]
        refused = [r for r in answers if r.status_code == 503]
        for r in refused:
            assert int(r.headers["retry-after"]) >= 1
            body = r.json()
            assert body["reason"] == "full" and body["maybe_stored"] is False, body
            assert "full" in body["detail"]
        accepted = [r.json()["activation_id"] for r in answers if r.status_code == 202]
        for activation_id in accepted:
            record = wait_activation(client, activation_id, timeout=90)
            assert record["status"] == "success", record
        # drained: the queue takes work again
        again = client.post(invoke, json={"s": 0})
        assert again.status_code == 202, again.text
        assert wait_activation(client, again.json()["activation_id"])["status"] == "success"
        for i in range(24):  # 24 KiB of events: more than EVENTS may keep
            headers = {
                "ce-specversion": "1.0",
                "ce-id": f"filler-{i}",
                "ce-source": "/tests/budgets",
                "ce-type": "com.example.filler",
                "content-type": "application/octet-stream",
            }
            assert client.post("/v1/events", headers=headers, content=b"x" * 1024).is_success
        text = client.get("/metrics").text
    assert _metric(text, "deepfaas_bus_stream_budget_bytes", "INVOCATIONS") == 6000
    # EVENTS took more than fits: its oldest went, it stays within its budget
    assert _metric(text, "deepfaas_bus_stream_budget_bytes", "EVENTS") == 16384
    assert 0 < _metric(text, "deepfaas_bus_stream_bytes", "EVENTS") <= 16384
    assert _metric(text, "deepfaas_bus_stream_budget_bytes", "KV_functions") > 0
    wait_for(lambda: "bus stream EVENTS holds" in budgeted.log_path.read_text(), timeout=30)


def test_status_shows_each_stream_against_its_budget(budgeted: Platform) -> None:
    env = {**os.environ, "DEEPFAAS_AUTH": budgeted.auth}
    done = subprocess.run(
        [sys.executable, "-m", "cli", "status", "--url", budgeted.url, "--json"],
        capture_output=True,
        env=env,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr.decode()
    report = orjson.loads(done.stdout)
    assert report["ready"]["status"] == "ok"
    rows = {row["stream"]: row for row in report["streams"]}
    assert rows["INVOCATIONS"]["budget"] == 6000
    assert rows["EVENTS"]["used"] is not None and rows["EVENTS"]["used"] <= 1
    assert {"KV_activations", "KV_auth_keys", "DLQ"} <= set(rows)
    human = subprocess.run(
        [sys.executable, "-m", "cli", "status", "--url", budgeted.url],
        capture_output=True,
        env={**env, "COLUMNS": "200"},
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert human.returncode == 0 and b"INVOCATIONS" in human.stdout, human.stderr
    assert httpx.get(f"{budgeted.url}/readyz").status_code == 200
