"""The bus away: the gateway refuses with 503 + Retry-After, and nothing refused runs later;
the nats-server that `deepfaas up` started is started again when it dies."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.functions import NOOP, RECORDING
from tests.e2e.test_faults import ready_instances, recorded
from tests.e2e.test_invoke import deploy
from tests.support import Platform, embedded_nats, start_platform, wait_activation, wait_for

EVENT = {
    "ce-specversion": "1.0",
    "ce-id": "refused-while-down",
    "ce-source": "/tests/faults",
    "ce-type": "com.example.faults.refused",
    "content-type": "application/json",
}


def _refused(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["maybe_stored"] is False, response.text


def _serves(client: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response | None:
    try:
        r = client.post(path, json=body)
    except httpx.HTTPError:
        return None
    return r if r.status_code in (200, 202) else None


def test_bus_down_answers_503_and_runs_nothing_refused(
    client: httpx.Client, platform: Platform
) -> None:
    deploy(client, "faulty", RECORDING, min_scale=1, max_scale=1, concurrency=4)
    ready_instances(client, "faulty")
    assert client.put("/v1/buckets/runs-down").status_code in (200, 201)
    invoke = "/v1/functions/faulty/invoke"
    before = client.post(invoke, json={"bucket": "runs-down", "tag": "before"})
    assert before.status_code == 200, before.text
    platform.nats.stop()
    try:
        for i in range(4):
            _refused(client.post(invoke, json={"bucket": "runs-down", "tag": f"sync{i}"}))
            body = {"bucket": "runs-down", "tag": f"async{i}"}
            _refused(client.post(f"{invoke}?async=true", json=body))
        _refused(client.post("/v1/events", headers=EVENT, content=b"{}"))
        # every other route that needs the bus is a 503 to retry too, never a 500
        down = client.get("/v1/activations", params={"function": "faulty"})
        assert down.status_code == 503 and "retry-after" in down.headers, down.text
    finally:
        platform.nats.start()
    # anything refused but kept by a client library would be sent at the reconnect, before these
    after = wait_for(
        lambda: _serves(client, f"{invoke}?async=true", {"bucket": "runs-down", "tag": "after"}),
        timeout=60,
        interval=0.2,
    )
    assert wait_activation(client, after.json()["activation_id"], timeout=60)["status"] == "success"
    synced = client.post(invoke, json={"bucket": "runs-down", "tag": "aftersync"})
    assert synced.status_code == 200, synced.text
    assert recorded(client, "runs-down") == ["after", "aftersync", "before"]
    # the refused event was not stored: its id is new to EVENTS (a stored one is a duplicate)
    again = client.post("/v1/events", headers=EVENT, content=b"{}")
    assert again.status_code == 202 and again.json()["duplicate"] is False, again.text


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    data_dir = Path(tmp_path_factory.mktemp("embedded"))
    started = start_platform(embedded_nats(data_dir), data_dir)
    yield started
    started.stop()


def _nats_pid(data_dir: Path) -> int | None:
    """The pid of the nats-server reading ``data_dir``'s config (the one `up` started)."""
    config = str(data_dir / "nats" / "nats.conf").encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if config in cmdline.split(b"\0"):
            return int(entry.name)
    return None


def test_up_starts_its_killed_nats_server_again(embedded: Platform) -> None:
    with embedded.client() as client:
        deploy(client, "survivor", NOOP, min_scale=1, max_scale=1)
        ready_instances(client, "survivor")
        first = _nats_pid(embedded.data_dir)
        assert first is not None
        os.kill(first, signal.SIGKILL)
        second = wait_for(
            lambda: (pid := _nats_pid(embedded.data_dir)) != first and pid, timeout=30
        )
        assert second != first
        invoke = "/v1/functions/survivor/invoke"
        served = wait_for(lambda: _serves(client, invoke, {"x": 1}), timeout=60, interval=0.2)
        assert served.status_code == 200 and served.json() == {"x": 1}, served.text
        queued = client.post(f"{invoke}?async=true", json={"y": 2})
        assert queued.status_code == 202, queued.text
        record = wait_activation(client, queued.json()["activation_id"], timeout=60)
        assert record["status"] == "success" and record["result"] == {"y": 2}
    assert embedded.process.poll() is None
