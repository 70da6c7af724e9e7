"""Pulling from a durable consumer (`eventbus.consume.fetch`, `Puller`) against a real
nats-server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import nats
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from eventbus import consume
from eventbus.consume import Puller, fetch, give_back, snapshot
from eventbus.server import EmbeddedNats, create_cluster


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


async def _delivered(sub: Any, count: int) -> None:
    """Wait until ``count`` messages sit in the subscription's queue."""
    for _ in range(400):
        if sub._sub._pending_queue.qsize() >= count:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{count} message(s) never reached the subscription")


async def test_a_subscription_given_back_returns_what_its_open_request_brought(
    nc: Any,
) -> None:
    """A worker stopping while its fetch waits: the fetch is cancelled, its request stays open
    on the server, and an invocation queued then is delivered to it. Given back, it goes to
    the next reader at once; unsubscribed as before, it came back only after the consumer's
    ack wait (30 s here): a rolling update's queued sync call waited that long in a CI run."""
    js = nc.jetstream()
    await js.add_stream(name="give_back", subjects=["give_back.>"])
    await js.add_consumer("give_back", durable_name="reader", ack_policy="explicit", ack_wait=30)
    stopping = await js.pull_subscribe_bind(durable="reader", stream="give_back")
    waiting = asyncio.create_task(fetch(stopping, 8, timeout=10))
    await asyncio.sleep(0.05)  # its request is with the server
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    await js.publish("give_back.x", b"queued during the stop")
    await _delivered(stopping, 1)  # to the open request
    assert await give_back(stopping) == 1
    assert stopping._sub._pending_queue.empty()
    await js.publish("give_back.x", b"after")  # the open request is served no more
    successor = await js.pull_subscribe_bind(durable="reader", stream="give_back")
    msgs = await fetch(successor, 8, timeout=3)  # well within the ack wait
    assert [msg.data for msg in msgs or []] == [b"queued during the stop", b"after"]
    assert [msg.metadata.num_delivered for msg in msgs or []] == [2, 1]
    await asyncio.gather(*(msg.ack() for msg in msgs or []))
    assert await give_back(successor) == 0


async def test_a_fetch_cancelled_with_messages_in_hand_queues_them_again(
    nc: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consumer at its `max_ack_pending` keeps a request open after its message: the fetch
    holds the message while it waits briefly for the request's end (`AFTER_FIRST_S`, widened
    here so that the cancel lands in that wait). The message is queued again, counted as
    nats-py counts it, and given back with the rest."""
    monkeypatch.setattr(consume, "AFTER_FIRST_S", 5.0)
    js = nc.jetstream()
    await js.add_stream(name="put_back", subjects=["put_back.>"])
    await js.add_consumer(
        "put_back", durable_name="reader", ack_policy="explicit", ack_wait=30, max_ack_pending=1
    )
    sub = await js.pull_subscribe_bind(durable="reader", stream="put_back")
    waiting = asyncio.create_task(fetch(sub, 8, timeout=10))
    await asyncio.sleep(0.05)
    await js.publish("put_back.x", b"in hand")
    for _ in range(400):  # taken off the queue by the fetch, which waits on
        if sub._sub.pending_bytes == 0 and not waiting.done():
            await asyncio.sleep(0.05)
            break
        await asyncio.sleep(0.005)
    assert not waiting.done()
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    queue = sub._sub._pending_queue
    assert (queue.qsize(), sub._sub.pending_bytes) == (1, len(b"in hand"))
    assert await give_back(sub) == 1
    assert (sub._sub.pending_bytes, queue._unfinished_tasks) == (0, 0)
    successor = await js.pull_subscribe_bind(durable="reader", stream="put_back")
    msgs = await fetch(successor, 8, timeout=3) or []
    assert [msg.data for msg in msgs] == [b"in hand"]
    await msgs[0].ack()
    await give_back(successor)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[EmbeddedNats]]:
    """Three clustered nats-servers (started once for the module's cluster tests)."""
    servers = create_cluster(tmp_path_factory.mktemp("cluster"), 3)
    for server in servers:
        server.start(timeout=30)
    yield servers
    for server in servers:
        server.stop()


@contextlib.asynccontextmanager
async def _far_and_near(servers: list[EmbeddedNats], stream: str) -> AsyncIterator[tuple[Any, Any]]:
    """A stream with a durable ``reader`` (ack wait 30 s), and two connections: one to a
    server that does not hold the consumer (where the stopping reader is), one that does."""
    admin = servers[0].auth("admin")
    conns = []
    try:
        for server in servers:
            url = server.url.replace("nats://", f"nats://{admin.user}:{admin.password}@")
            conns.append(await nats.connect(url))
        js = conns[0].jetstream()
        for _ in range(100):  # the cluster elects its JetStream leader first
            with contextlib.suppress(Exception):
                await js.add_stream(name=stream, subjects=[f"{stream}.>"])
                break
            await asyncio.sleep(0.2)
        await js.add_consumer(stream, durable_name="reader", ack_policy="explicit", ack_wait=30)
        leader = (await js.consumer_info(stream, "reader")).cluster.leader
        names = [server.cluster.name if server.cluster else "" for server in servers]
        far = next(conn for conn, name in zip(conns, names, strict=True) if name != leader)
        near = next(conn for conn, name in zip(conns, names, strict=True) if name == leader)
        yield far, near
    finally:
        for conn in conns:
            await conn.close()


async def _all_arrive(near: Any, stream: str, sent: list[bytes]) -> set[bytes]:
    """What of ``sent`` a new reader on ``near`` gets within 3 s (well within the ack wait),
    acked; the naks travel to the consumer's server too, so one no-wait fetch may come first."""
    successor = await near.jetstream().pull_subscribe_bind(durable="reader", stream=stream)
    got: set[bytes] = set()
    deadline = asyncio.get_running_loop().time() + 3
    while got != set(sent) and asyncio.get_running_loop().time() < deadline:
        msgs = await fetch(successor, 8, timeout=0.5) or []
        got.update(msg.data for msg in msgs)
        await asyncio.gather(*(msg.ack() for msg in msgs))
    await give_back(successor)
    return got


async def test_in_a_cluster_a_subscription_is_given_back_once_its_request_ended(
    cluster: list[EmbeddedNats],
) -> None:
    """In a cluster the server holding the consumer learns of an unsubscribe after the
    client's own server: a message stored meanwhile went to the gone subscriber and waited out
    the ack wait (without the wait below, several of the 60 here, in each of five runs). Given
    back, the open request is waited for first (here it expires after 0.25 s), and every
    message reaches the next reader."""
    async with _far_and_near(cluster, "given") as (far, near):
        lost: list[bytes] = []
        for i in range(20):
            stopping = await far.jetstream().pull_subscribe_bind(durable="reader", stream="given")
            waiting = asyncio.create_task(fetch(stopping, 8, timeout=0.25))
            await asyncio.sleep(0.02)
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            # messages stored while the subscription goes: the race the wait closes
            sent = [f"{i}.{n}".encode() for n in range(3)]
            publishes = (near.jetstream().publish("given.x", data) for data in sent)
            await asyncio.gather(give_back(stopping), *publishes)
            lost += set(sent) - await _all_arrive(near, "given", sent)
        assert lost == []


async def test_in_a_cluster_a_stopped_puller_waits_for_its_request_to_end(
    cluster: list[EmbeddedNats],
) -> None:
    """The dispatcher's `Puller` in a cluster, stopped with its request open (0.25 s here),
    and messages stored right after: none is sent to no one (without the wait, some of the
    90 were, in each of three runs)."""
    async with _far_and_near(cluster, "pulled") as (far, near):
        lost: list[bytes] = []
        for i in range(30):
            puller = Puller(far, "pulled", "reader", batch=256, expires=0.25)
            await puller.start()
            assert await puller.take(8, timeout=0.02) == []  # its request is open now
            await puller.stop()
            # stored at once: the consumer's server may not know of the unsubscribe yet
            sent = [f"{i}.{n}".encode() for n in range(3)]
            await asyncio.gather(*(near.jetstream().publish("pulled.x", d) for d in sent))
            lost += set(sent) - await _all_arrive(near, "pulled", sent)
        assert lost == []


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


# -- Puller: one request open at a time ------------------------------------------------------


async def _puller(nc: Any, name: str, count: int, **kw: Any) -> Puller:
    """A stream ``<name>`` holding ``count`` messages, its consumer, and a started Puller."""
    await _consumer(nc, name, count)
    puller = Puller(nc, name, "reader", **kw)
    await puller.start()
    return puller


async def _requests(nc: Any, stream: str) -> list[bytes]:
    """Every pull request sent for ``stream``'s consumer from now on, as the server gets it."""
    seen: list[bytes] = []

    async def add(msg: Any) -> None:
        seen.append(msg.data)

    await nc.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.reader", cb=add)
    await nc.flush()
    return seen


async def test_a_puller_hands_over_what_is_stored_in_order_with_few_requests(nc: Any) -> None:
    await _consumer(nc, "pull_order", 600)
    requests = await _requests(nc, "pull_order")
    puller = Puller(nc, "pull_order", "reader", batch=256)
    await puller.start()
    seen: list[int] = []
    while len(seen) < 600:
        msgs = await puller.take(100, timeout=2)
        assert msgs and len(msgs) <= 100, f"stalled after {len(seen)} messages"
        seen.extend(int(msg.data) for msg in msgs)
        await asyncio.gather(*(msg.ack() for msg in msgs))
    assert seen == list(range(600))
    assert await puller.take(100, timeout=0.2) == []
    await puller.stop()
    # 600 messages in requests of 256: three that ended with their last message, one open
    assert 3 <= len(requests) <= 4, requests
    info = await nc.jetstream().consumer_info("pull_order", "reader")
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


async def test_a_puller_hands_over_a_message_the_moment_it_arrives(nc: Any) -> None:
    """As `fetch` does on a quiet stream: each message at once, not when a second comes."""
    puller = await _puller(nc, "pull_handover", 0, expires=0.3)
    js = nc.jetstream()
    for round_ in range(3):
        assert await puller.take(8, timeout=0.5) == []  # idle past a request's expiry
        for i in range(3):
            waiting = asyncio.create_task(puller.take(8, timeout=10))
            await asyncio.sleep(0.05)
            await js.publish("pull_handover.x", f"{round_}{i}".encode())
            done, _ = await asyncio.wait({waiting}, timeout=2)
            assert done, f"message {i} of round {round_} was held"
            assert [m.data.decode() for m in waiting.result()] == [f"{round_}{i}"]
            await waiting.result()[0].ack()
    await puller.stop()


async def test_messages_published_while_pulling_each_arrive_once(nc: Any) -> None:
    puller = await _puller(nc, "pull_live", 0, batch=16)
    js = nc.jetstream()

    async def publish() -> None:
        for i in range(300):
            await js.publish("pull_live.x", str(i).encode())
            if i % 7 == 0:
                await asyncio.sleep(0.001)

    publisher = asyncio.create_task(publish())
    seen: list[int] = []
    while len(seen) < 300:
        msgs = await puller.take(32, timeout=2)
        assert msgs or not publisher.done(), f"stalled after {len(seen)} messages"
        seen.extend(int(msg.data) for msg in msgs)
        await asyncio.gather(*(msg.ack() for msg in msgs))
    await publisher
    assert seen == list(range(300))
    await puller.stop()


async def test_a_stopped_puller_gives_back_what_it_did_not_hand_over(nc: Any) -> None:
    """Delivered but not taken, or still on its way when the puller stops: back to the
    consumer at once (its ack wait is 30 s). A backlog of large messages keeps some of the
    open request's on the wire at the stop."""
    js = nc.jetstream()
    await js.add_stream(name="pull_stop", subjects=["pull_stop.>"])
    await asyncio.gather(*(js.publish("pull_stop.x", b"x" * 2000) for _ in range(600)))
    await js.add_consumer("pull_stop", durable_name="reader", ack_policy="explicit", ack_wait=30)
    puller = Puller(nc, "pull_stop", "reader", batch=256)
    await puller.start()
    first = await puller.take(1, timeout=2)
    await first[0].ack()
    await puller.stop()
    again = Puller(nc, "pull_stop", "reader", batch=1000)
    await again.start()
    back: set[int] = set()
    deadline = asyncio.get_running_loop().time() + 10  # well within the ack wait of 30 s
    while len(back) < 599 and asyncio.get_running_loop().time() < deadline:
        msgs = await again.take(1000, timeout=1)
        back.update(m.metadata.sequence.stream for m in msgs)
        await asyncio.gather(*(m.ack() for m in msgs))
    await again.stop()
    assert back == set(range(2, 601))  # redelivered (in any order)


async def test_a_puller_asks_again_after_the_server_ends_or_loses_its_request(
    nats_server: EmbeddedNats,
) -> None:
    """A consumer deleted and made again (the server ends the request with a 409), then a
    server restart (the open request is lost without a word): messages flow after each."""
    nc = await nats.connect(nats_server.admin_url, max_reconnect_attempts=-1,
                            reconnect_time_wait=0.1)  # fmt: skip
    try:
        puller = await _puller(nc, "pull_lost", 0, expires=0.5)
        js = nc.jetstream()
        assert await puller.take(8, timeout=0.1) == []  # a request is open
        await js.delete_consumer("pull_lost", "reader")
        await js.add_consumer("pull_lost", durable_name="reader", ack_policy="explicit")
        await js.publish("pull_lost.x", b"after-delete")
        msgs = await puller.take(8, timeout=3)
        assert [m.data for m in msgs] == [b"after-delete"]
        await msgs[0].ack()
        nats_server.restart()
        await asyncio.wait_for(_published(js, "pull_lost.x", b"after-restart"), 10)
        msgs = await puller.take(8, timeout=5)
        assert [m.data for m in msgs] == [b"after-restart"]
        await puller.stop()
    finally:
        await nc.close()


async def _published(js: Any, subject: str, data: bytes) -> None:
    while True:
        try:
            await js.publish(subject, data, timeout=0.5)
            return
        except Exception:
            await asyncio.sleep(0.1)


async def test_a_snapshot_reads_what_was_there_once_and_leaves_no_consumer(nc: Any) -> None:
    await _consumer(nc, "snap", 600)
    js = nc.jetstream()

    def config(subject: str) -> ConsumerConfig:
        return ConsumerConfig(filter_subject=subject, deliver_policy=DeliverPolicy.ALL)

    seen = [
        int(m.data) async for batch in snapshot(nc, js, "snap", config("snap.x")) for m in batch
    ]
    assert seen == list(range(600))
    assert [b async for b in snapshot(nc, js, "snap", config("snap.none"))] == []
    async with contextlib.aclosing(snapshot(nc, js, "snap", config("snap.x"))) as early:
        async for _ in early:
            break  # a reader that stops at once
    names = [c.name for c in await js.consumers_info("snap")]
    assert names == ["reader"]  # the durable only: each snapshot's own is gone
