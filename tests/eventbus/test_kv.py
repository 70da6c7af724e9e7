"""The one KV helper every store uses, against a real nats-server's JetStream KV."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import pytest
from nats.js.kv import KeyValue
from pydantic import BaseModel

from eventbus.kv import cas, entry, keys, read, write


class Counter(BaseModel):
    """A value two writers race to change."""

    n: int = 0


async def bucket(nc: Any, name: str) -> KeyValue:
    """A fresh KV bucket for one test."""
    js = nc.jetstream()
    return await js.create_key_value(bucket=name)


async def test_an_empty_bucket_has_no_keys_and_prefixes_filter(nc: Any) -> None:
    kv = await bucket(nc, "kv_keys")
    assert await keys(kv) == []
    await kv.put("a.1", b"{}")
    await kv.put("b.1", b"{}")
    await kv.put("a.2", b"{}")
    await kv.delete("a.2")
    assert sorted(await keys(kv)) == ["a.1", "b.1"]
    assert await keys(kv, "a.") == ["a.1"]


async def test_a_bus_that_is_gone_is_an_error_not_an_empty_list(nats_url: str) -> None:
    conn = await nats.connect(nats_url)
    kv = await bucket(conn, "kv_gone")
    await kv.put("x", b"{}")
    await conn.close()
    with pytest.raises(Exception) as caught:
        await keys(kv)
    assert "NoKeys" not in type(caught.value).__name__


async def test_cas_applies_every_change_once_under_racing_writers(nc: Any) -> None:
    kv = await bucket(nc, "kv_cas")

    def bump(current: Counter | None) -> Counter:
        return Counter(n=(current.n if current else 0) + 1)

    await asyncio.gather(*(cas(kv, "c", Counter, bump) for _ in range(8)))
    found = await read(kv, "c", Counter)
    assert found is not None and found[0].n == 8
    assert await read(kv, "absent", Counter) is None


async def test_write_is_a_compare_and_set_that_says_who_lost(nc: Any) -> None:
    kv = await bucket(nc, "kv_write")
    first = await write(kv, "k", b"1", last=None)
    assert first is not None
    assert await write(kv, "k", b"other", last=None) is None  # exists already
    second = await write(kv, "k", b"2", last=first)
    assert second is not None and second > first
    assert await write(kv, "k", b"stale", last=first) is None
    await kv.delete("k")
    assert await entry(kv, "k") is None
    third = await write(kv, "k", b"3", last=None)  # a deleted entry is absent: create again
    found = await entry(kv, "k")
    assert third is not None and found is not None and found.value == b"3"
