"""What lies between a function's first invocation and its first answer, on the real platform.

The controller here never reconciles on its own (``reconcile_s`` is an hour), so a worker that
starts was started by an event: the invocation's wake (from a sync, async or batch call, or the
dispatcher's for a trigger), or the function's registration finding work already queued. The
fork server imports the installed model plug-ins (`preload_models`, on by default), so a forked
inference worker does not import scikit-learn on its first call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from eventbus.connection import Bus
from eventbus.invocations import enqueue, new_invocation
from eventbus.server import EmbeddedNats
from tests.e2e.functions import NOOP, SLEEPY
from tests.e2e.test_fork_server import ready_servers
from tests.e2e.test_invoke import deploy
from tests.support import Platform, start_platform, wait_activation, wait_for

SLOW_S = 12.0


@pytest.fixture(scope="module")
def platform(
    nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    started = start_platform(
        nats_server,
        Path(tmp_path_factory.mktemp("cold")),
        reconcile_s=3600,
        prewarm=0,
        preload_models="true",
    )
    yield started
    started.stop()


async def _queue(platform: Platform, function: str) -> str:
    bus = await Bus.connect(platform.nats.admin_url, name="test-cold-start-path")
    try:
        invocation = new_invocation(bus, function, b'{"early": true}', source="/test")
        await enqueue(bus, invocation)
        return invocation.id
    finally:
        await bus.close()


def test_work_queued_before_its_function_is_registered_starts_a_worker_at_registration(
    client: httpx.Client, platform: Platform
) -> None:
    # queued straight on the bus: no wake is sent, and the controller does not know the function
    activation = asyncio.run(_queue(platform, "early"))
    deploy(client, "early", NOOP, min_scale=0)
    record = wait_activation(client, activation, timeout=60)
    assert record["status"] == "success", record
    assert client.get(f"/v1/activations/{activation}/result").json()["result"] == {"early": True}


def test_a_removed_function_draining_does_not_hold_up_another_functions_first_call(
    client: httpx.Client, platform: Platform
) -> None:
    deploy(client, "draining", SLEEPY, min_scale=1)
    r = client.post("/v1/functions/draining/invoke?async=true", json={"s": SLOW_S})
    assert r.status_code == 202, r.text
    slow = r.json()["activation_id"]
    wait_for(
        lambda: client.get(f"/v1/activations/{slow}").json().get("status") == "running",
        timeout=60,
    )
    assert client.delete("/v1/functions/draining").status_code == 204
    # the removed function's worker drains its run; meanwhile a new function is registered,
    # woken by its first call and answers it
    deploy(client, "next", NOOP, min_scale=0)
    r = client.post("/v1/functions/next/invoke", json={"n": 1}, timeout=60)
    assert r.status_code == 200 and r.json() == {"n": 1}, r.text
    assert client.get(f"/v1/activations/{slow}").json()["status"] == "running"
    # and the drained run still completes, once
    record = wait_activation(client, slow, timeout=60)
    assert record["status"] == "success" and record["attempts"] == 1, record


def test_the_fork_server_has_the_model_plugins_imported(platform: Platform) -> None:
    [server] = wait_for(lambda: ready_servers(platform), 90)
    maps = Path(f"/proc/{server}/maps").read_text()
    # scikit-learn's compiled extensions, mapped once here and shared by every forked worker
    assert "/sklearn/" in maps


def _at_zero(client: httpx.Client, name: str) -> None:
    """Deploy NOOP as ``name`` with no worker, and wait until the controller has registered it
    (else its registration, finding the work queued, would start the worker, not the wake)."""
    deploy(client, name, NOOP, min_scale=0)

    def registered() -> bool:
        r = client.get(f"/v1/functions/{name}/runtime")  # 503 while the controller is busy
        return r.status_code == 200 and r.json()["status"] != "unknown" and not r.json()["workers"]

    wait_for(registered, timeout=30)


@pytest.mark.parametrize("door", ["async", "batch"])
def test_an_async_call_wakes_a_function_at_zero(
    client: httpx.Client, platform: Platform, door: str
) -> None:
    name = f"woken-{door}"
    _at_zero(client, name)
    if door == "async":
        r = client.post(f"/v1/functions/{name}/invoke?async=true", json={"n": 1})
        assert r.status_code == 202, r.text
        [activation] = [r.json()["activation_id"]]
    else:
        r = client.post(f"/v1/functions/{name}/invocations", json={"inputs": [{"n": 1}]})
        assert r.status_code == 202, r.text
        [activation] = r.json()["activation_ids"]
    record = wait_activation(client, activation, timeout=60)
    assert record["status"] == "success", record


def test_a_triggers_invocation_wakes_its_function_at_zero(
    client: httpx.Client, platform: Platform
) -> None:
    _at_zero(client, "woken-upload")
    assert client.put("/v1/buckets/wake-in").status_code in (200, 201)
    r = client.post(
        "/v1/triggers", json={"name": "t-woken", "function": "woken-upload", "bucket": "wake-in"}
    )
    assert r.status_code == 201, r.text
    assert client.put("/v1/buckets/wake-in/objects/a.txt", content=b"x").status_code == 201

    def completed() -> list[dict[str, object]]:
        found = client.get("/v1/activations", params={"function": "woken-upload"}).json()
        return [a for a in found if a["status"] == "success"]

    [record] = wait_for(completed, timeout=60)
    assert record["status"] == "success", record
