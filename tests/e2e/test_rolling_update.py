"""A rolling update loses no invocation: calls keep flowing while a new version rolls out.

Every call made before, during and after `PUT /v1/functions/roll` succeeds, each activation
record names the version that ran it (and the result the handler returned agrees), and both
versions appear.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from tests.e2e.test_invoke import deploy
from tests.support import Platform, instances, wait_activation, wait_for

VERSIONED = """
import time


def main(params: dict, ctx) -> dict:
    time.sleep(params.get("s", 0))
    return {"n": params["n"], "ran": ctx.version, "tag": TAG}


TAG = "{tag}"
"""


def _code(tag: str) -> str:
    return VERSIONED.replace("{tag}", tag)


def test_rolling_update_loses_no_invocation(client: httpx.Client, platform: Platform) -> None:
    deploy(client, "roll", _code("old"), min_scale=1, max_scale=2, concurrency=4)
    wait_for(lambda: client.post("/v1/functions/roll/invoke", json={"n": -1}).status_code == 200)
    stop = threading.Event()
    sync_results: list[tuple[int, httpx.Response]] = []
    async_ids: list[tuple[int, str]] = []
    errors: list[BaseException] = []

    def call_sync() -> None:
        with platform.client() as c:
            n = 0
            while not stop.is_set():
                try:
                    sync_results.append((n, c.post("/v1/functions/roll/invoke", json={"n": n})))
                except BaseException as exc:  # a lost call is what this test looks for
                    errors.append(exc)
                n += 1

    def call_async() -> None:
        with platform.client() as c:
            n = 100_000
            while not stop.is_set():
                try:
                    r = c.post("/v1/functions/roll/invoke?async=true", json={"n": n, "s": 0.02})
                    assert r.status_code == 202, r.text
                    async_ids.append((n, r.json()["activation_id"]))
                except BaseException as exc:
                    errors.append(exc)
                n += 1
                time.sleep(0.005)

    threads = [threading.Thread(target=f, daemon=True) for f in (call_sync, call_sync, call_async)]
    for thread in threads:
        thread.start()

    def calls_since(sync: int, asynchronous: int) -> bool:
        # 11 of each before the roll and 11 after: the > 20 below is what these waits ensure
        return len(sync_results) >= sync + 11 and len(async_ids) >= asynchronous + 11

    try:
        wait_for(lambda: calls_since(0, 0))  # traffic flows before the roll
        deploy(client, "roll", _code("new"), min_scale=1, max_scale=2, concurrency=4)

        def rolled() -> bool:
            items = instances(client, "roll")
            return bool(items) and all(i["version"] == 2 for i in items)

        wait_for(rolled, timeout=60)
        at_roll = len(sync_results), len(async_ids)
        wait_for(lambda: calls_since(*at_roll))  # and after it
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=90)
    assert errors == []
    assert len(sync_results) > 20 and len(async_ids) > 20
    ran: dict[int, int] = {}
    for n, r in sync_results:
        assert r.status_code == 200, (n, r.status_code, r.text)
        body = r.json()
        assert body["n"] == n
        assert body["tag"] == ("old" if body["ran"] == 1 else "new")
        sync_record = client.get(f"/v1/activations/{r.headers['x-activation-id']}").json()
        assert sync_record["status"] == "success" and sync_record["version"] == body["ran"]
        ran[body["ran"]] = ran.get(body["ran"], 0) + 1
    for n, activation_id in async_ids:
        record: dict[str, Any] = wait_activation(client, activation_id, timeout=60)
        assert record["status"] == "success", record
        assert record["result"]["n"] == n and record["version"] == record["result"]["ran"]
        ran[record["version"]] = ran.get(record["version"], 0) + 1
    assert set(ran) == {1, 2}, ran
    print(f"invocations by version: {ran}")
