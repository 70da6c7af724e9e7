"""Fetching from a pull consumer (`eventbus.consume.fetch`) against a real nats-server."""

from __future__ import annotations

import asyncio
from typing import Any

import nats

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
    # the subscription's count of pending bytes is back at zero, its queue empty
    assert sub._sub.pending_bytes == 0
    assert sub._sub._pending_queue.empty()
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


async def test_a_fetch_hands_over_a_message_the_moment_it_arrives(nc: Any) -> None:
    """One message at a time on a quiet stream: each fetch (room for 8, 10 s to wait) returns
    with its one message, not when a second comes or its wait runs out. nats-py's own fetch,
    after an idle fetch, left a pull request open on the server, and the next fetch then held
    such a message until the next one arrived (most of the time: three rounds here)."""
    sub = await _consumer(nc, "fetch_handover", 0)
    js = nc.jetstream()
    for round_ in range(3):
        assert await fetch(sub, 8, timeout=0.3) == []  # idle first, as a quiet worker's
        for i in range(3):
            waiting = asyncio.create_task(fetch(sub, 8, timeout=10))
            await asyncio.sleep(0.05)  # the fetch's request is with the server
            await js.publish("fetch_handover.x", f"{round_}{i}".encode())
            done, _ = await asyncio.wait({waiting}, timeout=5)
            assert done, f"message {i} of round {round_} was held by the fetch"
            msgs = waiting.result()
            assert [msg.data.decode() for msg in msgs or []] == [f"{round_}{i}"]
            await msgs[0].ack()


async def test_a_message_with_a_status_header_is_a_message(nc: Any) -> None:
    """A publisher's own `Status` header, and an empty body, do not make a stream message
    look like the server's word on the request."""
    sub = await _consumer(nc, "fetch_status", 0)
    await nc.jetstream().publish("fetch_status.x", b"", headers={"Status": "404"})
    msgs = await fetch(sub, 8, timeout=2)
    assert msgs is not None and len(msgs) == 1 and msgs[0].headers == {"Status": "404"}


async def test_a_fetch_on_a_closed_connection_fails_as_before(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    sub = await _consumer(nc, "fetch_closed", 3)
    assert [int(msg.data) for msg in await fetch(sub, 2) or []] == [0, 1]
    await nc.close()
    assert await fetch(sub, 2, pause=0) is None
