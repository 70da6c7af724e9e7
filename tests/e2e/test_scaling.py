"""Elastic local runtimes on the real platform: scale from zero, idle release, bursts, GPUs.

The platform runs with a 1 s idle period, a prewarmed pool of one, a 2 s bound on waiting for
a GPU and a fake inventory of two A100s (this machine has no GPU), so the GPU assignment path
(`CUDA_VISIBLE_DEVICES` per worker) and the pending path are both exercised. Runtime state is
read from the controller's read-only `control.runtimes` answer, as the gateway relays it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from eventbus.server import EmbeddedNats
from tests.e2e.functions import NOOP, RECORDING
from tests.e2e.test_faults import recorded
from tests.e2e.test_invoke import deploy
from tests.support import Platform, instances, start_platform, wait_activation, wait_for

IDLE_S = 1.0
GPU_WAIT_S = 2.0
FAKE_GPUS = '[{"index": 0, "model": "NVIDIA A100"}, {"index": 1, "model": "NVIDIA A100"}]'
CUDA_ENV = """
import os


def main(params):
    return {"cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}
"""


@pytest.fixture(scope="module")
def platform(
    nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    started = start_platform(
        nats_server,
        Path(tmp_path_factory.mktemp("scaling")),
        idle_release_s=IDLE_S,
        prewarm=1,
        gpu_wait_s=GPU_WAIT_S,
        gpus=FAKE_GPUS,
    )
    yield started
    started.stop()


def runtime(platform: Platform, name: str) -> dict[str, Any] | None:
    """The controller's view of one function's runtime (None until it knows the function)."""

    async def ask() -> dict[str, Any] | None:
        import nats

        nc = await nats.connect(platform.nats.admin_url)
        try:
            reply = await nc.request("control.runtimes", name.encode(), timeout=2)
        finally:
            await nc.close()
        found: list[dict[str, Any]] = orjson.loads(reply.data)["runtimes"]
        return found[0] if found else None

    return asyncio.run(ask())


def wait_runtime(platform: Platform, name: str, timeout: float = 30, **want: Any) -> dict[str, Any]:
    """Poll the runtime until every field in ``want`` has that value."""

    def matches() -> dict[str, Any] | None:
        state = runtime(platform, name)
        if state is not None and all(state.get(k) == v for k, v in want.items()):
            return state
        return None

    found: dict[str, Any] = wait_for(matches, timeout=timeout, interval=0.1)
    return found


def _route_runtime(client: httpx.Client, name: str, status: str) -> dict[str, Any] | None:
    """`GET /v1/functions/{name}/runtime` once it has ``status``."""
    r = client.get(f"/v1/functions/{name}/runtime")
    body: dict[str, Any] = r.json()
    return body if r.status_code == 200 and body["status"] == status else None


def record_of(client: httpx.Client, response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = client.get(
        f"/v1/activations/{response.headers['x-activation-id']}"
    ).json()
    return body


def test_first_invocation_scales_from_zero_and_idle_releases_it(
    client: httpx.Client, platform: Platform
) -> None:
    deploy(client, "zero", NOOP, min_scale=0)
    idle = wait_runtime(platform, "zero", status="idle")
    assert idle["workers"] == 0 and idle["desired"] == 0
    r = client.post("/v1/functions/zero/invoke", json={"n": 1})
    assert r.status_code == 200, r.text
    first = record_of(client, r)
    assert first["cold_start"] is True and first["init_ms"] > 0
    assert runtime(platform, "zero")["workers"] == 1  # type: ignore[index]
    released = wait_runtime(platform, "zero", workers=0, status="idle")
    assert released["desired"] == 0
    wait_for(lambda: instances(client, "zero") == [])  # drained
    again = client.post("/v1/functions/zero/invoke", json={"n": 2})
    assert again.status_code == 200 and again.json() == {"n": 2}
    second = record_of(client, again)
    assert second["cold_start"] is True and second["init_ms"] > 0


def test_min_scale_keeps_workers_through_idle_periods(
    client: httpx.Client, platform: Platform
) -> None:
    deploy(client, "kept", NOOP, min_scale=1, max_scale=2)
    wait_runtime(platform, "kept", ready=1)
    assert client.post("/v1/functions/kept/invoke", json={}).status_code == 200
    # Several idle periods pass: the runtime keeps its one worker.
    time.sleep(IDLE_S * 3)
    state = runtime(platform, "kept")
    assert state is not None and state["ready"] == 1 and state["desired"] == 1
    assert state["status"] == "ready"


def test_a_burst_of_500_scales_to_max_and_back_and_each_runs_once(
    client: httpx.Client, platform: Platform, tmp_path: Path
) -> None:
    max_scale = 3
    deploy(client, "burst", RECORDING, min_scale=0, max_scale=max_scale, concurrency=2)
    wait_runtime(platform, "burst", status="idle")
    assert client.put("/v1/buckets/runs-burst").status_code in (200, 201)
    peak = {"desired": 0, "ready": 0}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            state = runtime(platform, "burst") or {}
            for key in peak:
                peak[key] = max(peak[key], int(state.get(key, 0)))
            done.wait(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    ids = []
    try:
        for i in range(500):
            r = client.post(
                "/v1/functions/burst/invoke?async=true",
                json={"s": 0.1, "bucket": "runs-burst", "tag": f"t{i}"},
            )
            assert r.status_code == 202, r.text
            ids.append(r.json()["activation_id"])
        wait_for(
            lambda: len(recorded(client, "runs-burst")) >= 500,
            timeout=120,
            interval=0.2,
        )
    finally:
        done.set()
        watcher.join()
    records = [wait_activation(client, activation_id) for activation_id in ids]
    assert all(r["status"] == "success" for r in records)
    assert sorted(r["result"]["tag"] for r in records) == sorted(f"t{i}" for i in range(500))
    lines = recorded(client, "runs-burst")
    assert len(lines) == 500 and len(set(lines)) == 500  # every invocation ran exactly once
    assert peak == {"desired": max_scale, "ready": max_scale}
    back = wait_runtime(platform, "burst", workers=0, status="idle", timeout=60)
    assert back["desired"] == 0


def test_gpu_workers_each_get_their_own_gpu(client: httpx.Client, platform: Platform) -> None:
    deploy(client, "on-a100", CUDA_ENV, gpu=1, gpu_model="A100", min_scale=2, max_scale=2)
    state = wait_runtime(platform, "on-a100", ready=2)
    assert state["gpus"] == [0, 1]
    workers = instances(client, "on-a100")
    assert sorted(tuple(i["gpus"]) for i in workers) == [(0,), (1,)]
    seen = {client.post("/v1/functions/on-a100/invoke", json={}).json()["cuda"] for _ in range(20)}
    assert seen <= {"0", "1"} and seen
    assert client.delete("/v1/functions/on-a100").status_code == 204


def test_gpu_function_with_no_gpu_waits_pending_then_fails_with_the_reason(
    client: httpx.Client, platform: Platform
) -> None:
    deploy(client, "on-h100", CUDA_ENV, gpu=1, gpu_model="H100")
    r = client.post("/v1/functions/on-h100/invoke?async=true", json={})
    assert r.status_code == 202
    activation_id = r.json()["activation_id"]
    pending = wait_runtime(platform, "on-h100", status="pending")
    assert "no GPU" in pending["reason"] and "H100" in pending["reason"]
    assert pending["workers"] == 0
    # the same through the API's runtimes routes (they relay the controller's answer)
    one = wait_for(lambda: _route_runtime(client, "on-h100", "pending"), timeout=30)
    assert "no GPU" in one["reason"] and one["desired"] >= 1 and one["gpus"] == []
    listed = client.get("/v1/runtimes").json()
    assert "on-h100" in [r["function"] for r in listed["runtimes"]] and "prewarmed" in listed
    assert client.get("/v1/functions/not-there/runtime").status_code == 404
    record = wait_activation(client, activation_id, timeout=30)
    assert record["status"] == "error"
    assert "no GPU" in record["error"] and record["worker"] == "controller"
    assert record["result"] is None and record["logs"] == []  # it never ran, on a CPU or else
    letters = wait_for(lambda: client.get("/v1/dlq", params={"function": "on-h100"}).json())
    assert letters[0]["activation_id"] == activation_id
    sync = client.post("/v1/functions/on-h100/invoke", json={})
    assert sync.status_code == 502 and "no GPU" in sync.json()["detail"]
    assert runtime(platform, "on-h100")["workers"] == 0  # type: ignore[index]


def test_a_gpu_function_waits_while_every_matching_gpu_is_taken(
    client: httpx.Client, platform: Platform
) -> None:
    deploy(client, "hog", CUDA_ENV, gpu=2, gpu_model="A100", min_scale=1, max_scale=1)
    wait_runtime(platform, "hog", ready=1)
    deploy(client, "wants-a100", CUDA_ENV, gpu=1, gpu_model="A100")
    r = client.post("/v1/functions/wants-a100/invoke?async=true", json={})
    pending = wait_runtime(platform, "wants-a100", status="pending")
    assert "no GPU free" in pending["reason"] and "0 free" in pending["reason"]
    record = wait_activation(client, r.json()["activation_id"], timeout=30)
    assert record["status"] == "error" and "no GPU" in record["error"]
    assert client.delete("/v1/functions/hog").status_code == 204
    ran = client.post("/v1/functions/wants-a100/invoke", json={})
    assert ran.status_code == 200 and ran.json()["cuda"] in ("0", "1")
    assert client.delete("/v1/functions/wants-a100").status_code == 204


def test_a_gpu_function_update_hands_its_gpus_to_the_new_version(
    client: httpx.Client, platform: Platform
) -> None:
    deploy(client, "gpuroll", CUDA_ENV, gpu=2, gpu_model="A100", min_scale=1, max_scale=1)
    wait_runtime(platform, "gpuroll", ready=1)
    ids = [
        client.post("/v1/functions/gpuroll/invoke?async=true", json={}).json()["activation_id"]
        for _ in range(5)
    ]
    deploy(client, "gpuroll", CUDA_ENV, gpu=2, gpu_model="A100", min_scale=1, max_scale=1)
    ids += [
        client.post("/v1/functions/gpuroll/invoke?async=true", json={}).json()["activation_id"]
        for _ in range(5)
    ]
    state = wait_runtime(platform, "gpuroll", version=2, ready=1, retiring=0)
    assert state["gpus"] == [0, 1]
    records = [wait_activation(client, i, timeout=30) for i in ids]
    assert all(r["status"] == "success" and r["result"]["cuda"] == "0,1" for r in records)
    r = client.post("/v1/functions/gpuroll/invoke", json={})
    assert r.status_code == 200 and record_of(client, r)["version"] == 2
    assert client.delete("/v1/functions/gpuroll").status_code == 204
