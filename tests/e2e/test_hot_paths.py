"""What the hot paths keep: a sync run that skips its claim is still recorded before its 200,
a longer one is `running` while it runs, and binary bodies reach the handler as bytes.

Against the real platform (`deepfaas up`, real nats-server, sandboxed workers).
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from tests.e2e.functions import NOOP, SLEEPY
from tests.support import Platform, wait_for

KIND = """
def main(data):
    if isinstance(data, bytes):
        return {"bytes": len(data), "head": data[:4].hex()}
    return {"json": data}
"""


@pytest.fixture(scope="module")
def deployed(platform: Platform) -> Platform:
    with platform.client(timeout=60) as client:
        functions = (("quick", NOOP, "main"), ("slow", SLEEPY, "main"), ("kind", KIND, "main"))
        for name, code, handler in functions:
            spec = {"handler": handler, "code": code, "concurrency": 8, "max_scale": 1}
            r = client.put(f"/v1/functions/{name}", json=spec)
            assert r.status_code in (200, 201), r.text
    return platform


def test_a_quick_sync_run_is_recorded_before_its_answer(
    deployed: Platform, client: httpx.Client
) -> None:
    for n in range(20):
        r = client.post("/v1/functions/quick/invoke", json={"n": n})
        assert r.status_code == 200, r.text
        # read at once: the final record was written before the reply left the worker
        record = client.get(f"/v1/activations/{r.headers['x-activation-id']}")
        assert record.status_code == 200, record.text
        body = record.json()
        assert body["status"] == "success" and body["result"] == {"n": n}
        assert body["attempts"] == 1 and body["mode"] == "sync"


def test_a_longer_sync_run_is_running_while_it_runs(
    deployed: Platform, client: httpx.Client
) -> None:
    answers: list[httpx.Response] = []

    def call() -> None:
        with deployed.client(timeout=60) as own:
            answers.append(own.post("/v1/functions/slow/invoke", json={"s": 3}))

    caller = threading.Thread(target=call)
    caller.start()

    def running() -> dict[str, Any] | None:
        page = client.get("/v1/activations", params={"function": "slow", "limit": 5})
        found = [a for a in page.json() if a["status"] == "running"]
        return found[0] if found else None

    seen = wait_for(running, timeout=30)
    caller.join(60)
    assert answers and answers[0].status_code == 200, answers
    assert answers[0].headers["x-activation-id"] == seen["id"]
    final = client.get(f"/v1/activations/{seen['id']}").json()
    assert final["status"] == "success" and final["attempts"] == 1


@pytest.mark.parametrize("content_type", ["image/png", "application/octet-stream", "audio/wav"])
def test_a_binary_body_reaches_the_handler_as_bytes(
    deployed: Platform, client: httpx.Client, content_type: str
) -> None:
    blob = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40  # not UTF-8, not JSON
    r = client.post(
        "/v1/functions/kind/invoke", content=blob, headers={"content-type": content_type}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"bytes": len(blob), "head": "89504e47"}
    as_json = client.post("/v1/functions/kind/invoke", json={"a": 1})
    assert as_json.json() == {"json": {"a": 1}}
