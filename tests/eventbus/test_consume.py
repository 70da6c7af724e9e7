"""Fetching from a pull consumer (`eventbus.consume.fetch`) against a real nats-server."""

from __future__ import annotations

import asyncio
from typing import Any

import nats

from eventbus import consume
from eventbus.consume import fetch


async def _consumer(nc: Any, name: str, count: int) -> Any:
    """A stream ``<name>`` holding ``count`` messages (``0``, ``1``, ...) and a pull on it."""
    js = nc.jetstream()
    await js.add_stream(name=name, subjects=[f"{name}.>"])
    for start in range(0, count, 100):
        await asyncio.gather(
            *(
                js.publish(f"{name}.x", str(i).encode())
                for i in range(start, min(count, start + 100))
            )
        )
    return await js.pull_subscribe(f"{name}.x", durable="reader", stream=name)


async def test_a_fetch_returns_what_is_stored_in_order_and_leaves_no_count(nc: Any) -> None:
    sub = await _consumer(nc, "fetch_order", 150)
    sizes, seen = [], []
    for _ in range(3):
        msgs = await fetch(sub, 64)
        assert msgs is not None
        sizes.append(len(msgs))
        seen.extend(int(msg.data) for msg in msgs)
        for msg in msgs:
            await msg.ack()
    assert sizes == [64, 64, 22]
    assert seen == list(range(150))
    assert await fetch(sub, 64, timeout=0.2) == []
    # the queued messages were taken without nats-py's wait per message, and the bytes the
    # subscription counts as pending are back at zero (a late status message of the last
    # fetch, with no body, may still be queued: the next fetch drops it)
    assert getattr(sub, consume._QUICK) is True
    assert sub._sub.pending_bytes == 0
    info = await nc.jetstream().consumer_info("fetch_order", "reader")
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


async def test_messages_published_while_fetching_each_arrive_once(nc: Any) -> None:
    sub = await _consumer(nc, "fetch_live", 0)
    js = nc.jetstream()

    async def publish() -> None:
        for i in range(300):
            await js.publish("fetch_live.x", str(i).encode())
            if i % 7 == 0:
                await asyncio.sleep(0.001)

    publisher = asyncio.create_task(publish())
    seen: list[int] = []
    while len(seen) < 300:
        msgs = await fetch(sub, 32, timeout=2)
        assert msgs is not None
        assert msgs or not publisher.done(), f"stalled after {len(seen)} messages"
        for msg in msgs:
            seen.append(int(msg.data))
            await msg.ack()
    await publisher
    assert seen == list(range(300))
    assert await fetch(sub, 32, timeout=0.2) == []


async def test_a_fetch_on_a_closed_connection_fails_as_before(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    sub = await _consumer(nc, "fetch_closed", 3)
    assert [int(msg.data) for msg in await fetch(sub, 2) or []] == [0, 1]
    await nc.close()
    assert await fetch(sub, 2, pause=0) is None
