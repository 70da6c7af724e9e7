"""Reading EVENTS in order through an ordered consumer, as the gateway's role does, on a real
nats-server: each stored event once, a start after a sequence or from a time, odd messages
skipped."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from eventbus.connection import Bus
from eventbus.errors import ValidationFailedError
from eventbus.event_feed import EventFeed, StoredEvent
from eventbus.permissions import GATEWAY
from eventbus.publish import publish_event
from eventbus.server import EmbeddedNats
from eventbus.streams import ensure_layout
from eventbus.types import CloudEvent


@pytest.fixture
async def bus(nats_server: EmbeddedNats) -> AsyncIterator[Bus]:
    """The gateway role's connection: the feed needs no more than the gateway may do."""
    admin = await Bus.connect(nats_server.url, name="admin", auth=nats_server.auth("admin"))
    await ensure_layout(admin.js)
    await admin.close()
    gateway = await Bus.connect(nats_server.url, name="gateway", auth=nats_server.auth(GATEWAY))
    yield gateway
    await gateway.close()


async def publish(bus: Bus, event_id: str | None = None) -> int:
    event = CloudEvent.create(type="com.example.feed", source="/t", data={}, id=event_id)
    return int((await publish_event(bus, event, subject="events.com.example.feed")).seq)


async def read(feed: EventFeed, n: int) -> list[StoredEvent]:
    got: list[StoredEvent] = []
    for _ in range(20 * n):
        stored = await feed.next(0.25)
        if stored is not None:
            got.append(stored)
            if len(got) == n:
                return got
    raise AssertionError(f"{len(got)} of {n} events came")


async def test_each_stored_event_comes_once_in_order(bus: Bus) -> None:
    feed = await EventFeed.open(bus)
    try:
        assert feed.start_after is not None
        dup = uuid.uuid4().hex
        first = await publish(bus, dup)
        assert await publish(bus, dup) == first  # a duplicate: not stored again
        last = await publish(bus)
        got = await read(feed, 2)
        assert [s.seq for s in got] == [first, last] and got[0].event.id == dup
        assert await feed.next(0.3) is None
    finally:
        await feed.close()


async def test_a_feed_starts_after_a_sequence_or_from_a_time(bus: Bus) -> None:
    before = datetime.now(UTC)  # the module's server holds the other tests' events too
    seqs = [await publish(bus) for _ in range(3)]
    feed = await EventFeed.open(bus, after_seq=seqs[0], since=before)  # the sequence wins
    try:
        assert feed.start_after == seqs[0]
        assert [s.seq for s in await read(feed, 2)] == seqs[1:]
    finally:
        await feed.close()
    naive = before.replace(tzinfo=None)  # no offset: UTC
    feed = await EventFeed.open(bus, since=naive)
    try:
        assert feed.start_after is None
        assert [s.seq for s in await read(feed, 3)] == seqs
    finally:
        await feed.close()


async def test_activation_events_come_in_order_with_the_others(bus: Bus) -> None:
    """They are stored on `activation.>`, beside `events.>`: a feed reads both."""
    feed = await EventFeed.open(bus)
    try:
        first = await publish(bus)
        done = CloudEvent.create(
            type="io.deepfaas.activation.completed", source="/functions/f", data={}
        )
        middle = (await publish_event(bus, done)).seq
        last = await publish(bus)
        got = await read(feed, 3)
        assert [s.seq for s in got] == [first, middle, last]
        assert got[1].event == done
    finally:
        await feed.close()


async def test_a_message_that_is_not_a_cloudevent_is_skipped(bus: Bus) -> None:
    feed = await EventFeed.open(bus)
    try:
        odd = await bus.js.publish("events.com.example.feed", b"not an event")
        good = await publish(bus)
        got = await read(feed, 1)
        assert [s.seq for s in got] == [good] and good > odd.seq
        assert feed.last_seq == good
    finally:
        await feed.close()


async def test_a_time_out_of_range_is_refused(bus: Bus) -> None:
    late = datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-14)))
    with pytest.raises(ValidationFailedError, match="out of range"):
        await EventFeed.open(bus, since=late)
