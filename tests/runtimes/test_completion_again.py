"""A finished activation's completion is sent again only while JetStream drops a repeat.

A worker that finds its activation finished (a redelivery, or an event replayed much later)
sends the completion again, as the worker that finished it may have died before publishing it;
past the de-duplication window that would be a second event, so it is not sent.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from eventbus.codec import from_nats
from eventbus.connection import Bus
from eventbus.server import EmbeddedNats
from eventbus.streams import ensure_layout
from eventbus.types import EVENTS_STREAM
from runtimes.tally import CompletionTally
from runtimes.types import ActivationRecord, ActivationStatus
from runtimes.worker.results import (
    CompletionNotPublishedError,
    completion_event,
    emit_completion,
    emit_completion_again,
)


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    connected = await Bus.connect(nats_url, name="test-completion-again")
    await ensure_layout(connected.js)
    yield connected
    await connected.close()


async def completions(bus: Bus, event_id: str) -> int:
    """How many completion events with ``event_id`` the EVENTS stream holds."""
    sub = await bus.js.pull_subscribe("activation.>", stream=EVENTS_STREAM)
    try:
        pending = (await sub.consumer_info()).num_pending
        count = 0
        while pending:
            msgs = await sub.fetch(min(pending, 256), timeout=2)
            pending -= len(msgs)
            count += sum(from_nats(m.headers, m.data).id == event_id for m in msgs)
            for msg in msgs:
                await msg.ack()
        return count
    finally:
        await sub.unsubscribe()


def finished(ended: datetime) -> ActivationRecord:
    return ActivationRecord(
        id=uuid.uuid4().hex,
        function="fn",
        version=1,
        mode="async",
        status=ActivationStatus.SUCCESS,
        start=ended - timedelta(seconds=1),
        end=ended,
        result={"ok": True},
    )


def counted(tally: CompletionTally) -> dict[str, int]:
    """The statuses counted for `fn` since last asked."""
    counts = tally.take_counts().get("fn")
    return dict(counts.statuses) if counts is not None else {}


async def test_a_completion_is_sent_again_only_while_a_repeat_is_dropped(bus: Bus) -> None:
    """... and counted for the metrics once: a repeat JetStream drops was counted by the
    process that published it first."""
    tally = CompletionTally()
    recent = finished(datetime.now(UTC))
    assert await emit_completion_again(bus, recent, tally=tally)
    assert await emit_completion_again(bus, recent, tally=tally)
    assert await completions(bus, completion_event(bus, recent).id) == 1
    assert counted(tally) == {"success": 1}
    # an activation that ended long ago: its completion went out then (or is not re-sent)
    old = finished(datetime.now(UTC) - timedelta(minutes=10))
    assert not await emit_completion_again(bus, old, tally=tally)
    assert await completions(bus, completion_event(bus, old).id) == 0
    assert counted(tally) == {}


async def test_a_completion_waits_out_a_bus_that_cannot_take_it(tmp_path: Path) -> None:
    """A completion the bus cannot take (its server down, as in a leader election) is retried
    in place and lands once; past its patience the caller is told, so that the invocation is
    redelivered instead of its completion being lost."""
    server = EmbeddedNats(store_dir=tmp_path).start()
    bus = await Bus.connect(server.admin_url, name="test-completion-patience")
    try:
        await ensure_layout(bus.js)
        record = finished(datetime.now(UTC))
        tally = CompletionTally()
        server.stop(kill=True)
        # down for longer than the patience: not published, and said so
        assert not await emit_completion(bus, record, tally=tally, patience=0.5)
        with pytest.raises(CompletionNotPublishedError):
            await emit_completion_again(bus, record, tally=tally, patience=0.5)
        assert counted(tally) == {}
        # back while a publish is still being retried: it lands, once
        sending = asyncio.create_task(emit_completion(bus, record, tally=tally, patience=30))
        await asyncio.sleep(1.0)
        assert not sending.done()
        await asyncio.to_thread(server.start)
        assert await sending
        # Counted once at most: the calls that gave up left their publishes in the client's
        # buffer, and one of those may be what landed (then `sending` heard "duplicate" and
        # counted nothing: under an outage the metrics may miss such an activation).
        assert sum(counted(tally).values()) <= 1
        # a repeat, dropped by its id, and not counted again
        assert await emit_completion(bus, record, tally=tally)
        assert await completions(bus, completion_event(bus, record).id) == 1
        assert counted(tally) == {}
    finally:
        await bus.close()
        server.stop()


async def test_a_completion_finds_the_old_subject_when_an_old_process_reverted_the_stream(
    tmp_path: Path,
) -> None:
    """A process of the previous version (an upgrade under way) puts EVENTS back to `events.>`
    alone: no stream takes `activation.>`, and the completion goes where that version put it,
    which its dispatcher and subscriptions still read."""
    server = EmbeddedNats(store_dir=tmp_path).start()
    bus = await Bus.connect(server.admin_url, name="test-completion-legacy")
    try:
        await ensure_layout(bus.js)
        config = (await bus.js.stream_info(EVENTS_STREAM)).config
        config.subjects = ["events.>"]
        await bus.js.update_stream(config)
        record = finished(datetime.now(UTC))
        assert await emit_completion(bus, record, tally=None, patience=5)
        info = await bus.js.stream_info(EVENTS_STREAM, subjects_filter=">")
        assert info.state.subjects == {"events.activation.completed": 1}
    finally:
        await bus.close()
        server.stop()
