"""Callbacks and webhook sinks never reach what the operator did not allow (`eventbus.egress`).

The real platform (`DEEPFAAS_EGRESS_ALLOW=127.0.0.1/32`, as every e2e platform: the tests'
receivers listen there) and real receivers on 127.0.0.2, loopback but not allowed, standing
for a service on the platform's machine (SeaweedFS's filer writes a PUT body into any
bucket). The gateway refuses such URLs with a 422 naming the setting; one that reaches a worker
another way (an invocation published on the bus) is not posted.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest

from eventbus.connection import Bus
from eventbus.invocations import enqueue, new_invocation
from tests.e2e.functions import HELLO
from tests.eventbus.test_delivery import serve_receiver
from tests.support import Platform, wait_activation

REFUSED = [
    "http://127.0.0.2:9/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:8080/",
    "http://10.0.0.1/hook",
    "http://0x7f000002:9/",  # 127.0.0.2 as the resolver reads it
    "http://[::ffff:127.0.0.2]:9/",
]


def _deploy(client: httpx.Client) -> None:
    client.put("/v1/functions/hello", json={"handler": "main", "code": HELLO}).raise_for_status()


@pytest.mark.parametrize("url", REFUSED[:5])
def test_a_callback_at_a_refused_address_is_a_422(client: httpx.Client, url: str) -> None:
    _deploy(client)
    r = client.post("/v1/functions/hello/invoke", params={"callback": url}, json={})
    assert r.status_code == 422 and "DEEPFAAS_EGRESS_ALLOW" in r.json()["detail"], r.text
    header = client.post("/v1/functions/hello/invoke", headers={"x-callback-url": url}, json={})
    assert header.status_code == 422, header.text
    batch = {"inputs": [{"name": "a"}], "callback": url}
    r = client.post("/v1/functions/hello/invocations", json=batch)
    assert r.status_code == 422 and "DEEPFAAS_EGRESS_ALLOW" in r.json()["detail"], r.text


def test_a_webhook_sink_at_a_refused_address_is_a_422(client: httpx.Client) -> None:
    for url in REFUSED:
        r = client.post("/v1/subscriptions", json={"sink": url, "types": ["x.y"]})
        assert r.status_code == 422 and "DEEPFAAS_EGRESS_ALLOW" in r.text, (url, r.text)
        put = client.put("/v1/subscriptions/s-refused", json={"sink": url, "types": ["x.y"]})
        assert put.status_code == 422, (url, put.text)
    assert client.get("/v1/subscriptions/s-refused").status_code == 404


def test_a_callback_that_reaches_a_worker_past_the_gateway_is_not_posted(
    platform: Platform, client: httpx.Client
) -> None:
    """Published straight on the bus (as a service with bus credentials may): the activation
    runs and is recorded, the refused callback is not posted, and one to 127.0.0.1 is."""
    _deploy(client)
    with serve_receiver("127.0.0.2") as refused, serve_receiver() as allowed:
        ids = asyncio.run(_publish(platform, [refused.url + "/no", allowed.url + "/yes"]))
        for activation_id in ids:
            assert wait_activation(client, activation_id)["status"] == "success"
        deadline = time.monotonic() + 10
        while not allowed.at("/yes") and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # a refused callback would have come by now as well
        assert len(allowed.at("/yes")) == 1
        assert orjson.loads(allowed.at("/yes")[0].body)["id"] == ids[1]
        assert refused.requests == []
    assert "not sent" in platform.log_text() and "127.0.0.2 is loopback" in platform.log_text()


async def _publish(platform: Platform, callbacks: list[str]) -> list[str]:
    bus = await Bus.connect(platform.nats.admin_url, name="test-egress")
    try:
        ids = []
        for callback in callbacks:
            body = b'{"name": "cb"}'
            invocation = new_invocation(bus, "hello", body, source="/tests", callback=callback)
            await enqueue(bus, invocation)
            ids.append(invocation.id)
        return ids
    finally:
        await bus.close()
