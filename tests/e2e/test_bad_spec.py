"""A stored function spec that no longer validates (written straight into KV, as an older or a
broken client could) must not stop the controller from serving every other function."""

from __future__ import annotations

import asyncio

import httpx
import nats

from eventbus.server import EmbeddedNats
from tests.support import wait_for


async def _put_broken_spec(url: str) -> None:
    conn = await nats.connect(url)
    try:
        kv = await conn.jetstream().key_value("functions")
        await kv.put("broken", b'{"name": "broken", "handler": 42}')
    finally:
        await conn.close()


def test_a_bad_stored_spec_does_not_stall_other_functions(
    client: httpx.Client, nats_server: EmbeddedNats
) -> None:
    asyncio.run(_put_broken_spec(nats_server.admin_url))
    r = client.put(
        "/v1/functions/after-broken",
        json={"handler": "main", "code": "def main(p):\n    return {'ok': True}\n"},
    )
    assert r.status_code in (200, 201), r.text
    answer = wait_for(
        lambda: (
            resp
            if (resp := client.post("/v1/functions/after-broken/invoke", json={})).status_code
            == 200
            else None
        ),
        timeout=30,
    )
    assert answer.json() == {"ok": True}
    listed = client.get("/v1/functions")
    assert listed.status_code == 200 and "after-broken" in {f["name"] for f in listed.json()}
