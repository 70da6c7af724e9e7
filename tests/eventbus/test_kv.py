"""The one KV helper every store uses, against a real nats-server's JetStream KV."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import pytest
from nats.js.kv import KeyValue
from pydantic import BaseModel

from eventbus.connection import Bus
from eventbus.kv import KVMirror, cas, entry, keys, read, write
from tests.support import eventually


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


async def test_a_full_bucket_is_never_listed_empty(nc: Any) -> None:
    """Listings side by side of a bucket being written to: each has every key written before
    it began (nats-py's own `keys` now and then answered none: a CI run caught it)."""
    kv = await bucket(nc, "kv_many")
    await asyncio.gather(*(kv.put(f"k.{i}", b"{}") for i in range(300)))

    async def writes() -> None:
        for i in range(300, 400):
            await kv.put(f"k.{i}", b"{}")

    writer = asyncio.create_task(writes())
    listings = await asyncio.gather(*(keys(kv, "k.") for _ in range(20)))
    await writer
    assert all(set(listing) >= {f"k.{i}" for i in range(300)} for listing in listings)
    assert len(await keys(kv)) == 400 and await keys(kv, "k.1") == [
        key for key in await keys(kv) if key.startswith("k.1")
    ]


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


async def test_a_mirror_follows_its_prefix_and_reads_nothing_while_not_live(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    bus = await Bus.connect(nats_url, name="test-kv-mirror")
    kv = await bus.js.create_key_value(bucket="kv_mirror")
    await kv.put("modules.a", b'{"n": 1}')
    await kv.put("modules.b", b'{"n": 2}')
    await kv.put("versions.a.1", b'{"n": 9}')  # outside the prefix
    mirror = KVMirror(bus, "kv_mirror", "modules.", Counter)
    assert mirror.get("a") is None  # not started: nothing, the caller reads KV
    await mirror.start()
    try:
        assert mirror.live and mirror.get("a") == Counter(n=1) and mirror.get("b") == Counter(n=2)
        assert set(mirror.values) == {"a", "b"}
        await kv.put("modules.a", b'{"n": 3}')
        await kv.delete("modules.b")
        await kv.put("modules.c", b"not json")
        await kv.put("modules.d", b'{"n": 4}')
        await eventually(lambda: mirror.get("d"))
        assert mirror.get("a") == Counter(n=3)
        assert mirror.get("b") is None and mirror.get("c") is None
        assert "kv_mirror/modules.c ignored" in caplog.text
    finally:
        await mirror.stop()
        await bus.close()
    assert not mirror.live and mirror.get("a") is None
