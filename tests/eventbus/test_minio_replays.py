"""MinIO records replayed after JetStream's de-duplication window are not announced again.

MinIO replays notifications (from its queue dir, after a restart) whenever it likes; JetStream
drops a repeated event id only inside its window (2 minutes by default). This module's own
nats-server gets a window of a second, so "after the window" is a fact to wait for, not minutes.
The ledger decides by each record's own sequencer: a replay, or a record older than the key's
last event, is never published again.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

from eventbus.connection import Bus
from eventbus.minio_bridge import MinioBridge
from eventbus.storage import minio_notification, object_removed_record
from eventbus.storage_events import StorageLedger
from eventbus.streams import ensure_layout
from eventbus.types import EVENTS_STREAM, CloudEvent
from tests.eventbus.test_minio_bridge import MINIO, bucket_name, created, send
from tests.eventbus.test_storage_events import PREFIX, bucket_events
from tests.support import eventually

WINDOW = 1.0


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    connected = await Bus.connect(nats_url, name="test-minio-replays", prefix=PREFIX)
    # A fresh EVENTS each time: on the last test's, `ensure_layout` would set the window back
    # to 2 minutes for a moment, and a purge of remembered ids falling in that moment is next
    # due in 2 minutes (a CI run waited 20 s in `window_passed` for it)
    with contextlib.suppress(NotFoundError):
        await connected.js.delete_stream(EVENTS_STREAM)
    await ensure_layout(connected.js)
    config: StreamConfig = (await connected.js.stream_info(EVENTS_STREAM)).config
    config.duplicate_window = WINDOW
    await connected.js.update_stream(config)
    yield connected
    await connected.close()


@pytest.fixture
async def bridge(bus: Bus) -> AsyncIterator[MinioBridge]:
    tag = uuid.uuid4().hex[:8]
    ledger = StorageLedger(bus, kv_bucket=f"ledger_{tag}")
    started = MinioBridge(
        bus, stream=f"MINIO_{tag}", subject=f"minio.{tag}", durable=f"b-{tag}", ledger=ledger
    )
    await started.start()
    yield started
    await started.stop()


async def window_passed(bus: Bus) -> None:
    """Wait until JetStream no longer remembers an id published now."""
    probe = f"probe-{uuid.uuid4().hex}"
    subject = "events.test.probe"
    await bus.js.publish(subject, b"", headers={"Nats-Msg-Id": probe})

    async def forgotten() -> bool:
        ack = await bus.js.publish(subject, b"", headers={"Nats-Msg-Id": probe})
        return not ack.duplicate

    await eventually(forgotten)


def kinds(events: list[CloudEvent]) -> list[str]:
    return [e.type.rsplit(".", 1)[1] for e in events]


async def test_a_stale_created_after_deleted_is_not_announced(
    bus: Bus, bridge: MinioBridge
) -> None:
    bucket = bucket_name()
    write = created(bucket, "k.txt", "e1")
    removal = object_removed_record(bucket, "k.txt", context=MINIO)
    await send(bus, bridge, minio_notification(write), minio_notification(removal))
    assert kinds(await bucket_events(bus, bucket)) == ["created", "deleted"]
    await window_passed(bus)
    # MinIO replays the created record (a new message, the record's own sequencer and ETag)
    await send(bus, bridge, minio_notification(write))
    assert kinds(await bucket_events(bus, bucket)) == ["created", "deleted"]
    last = await bridge.ledger.get(bucket, "k.txt")
    assert last is not None and last.etag is None  # the key is still deleted


async def test_a_record_replayed_after_the_window_is_announced_once(
    bus: Bus, bridge: MinioBridge
) -> None:
    bucket = bucket_name()
    first = created(bucket, "a.txt", "e1", time=datetime.now(UTC) - timedelta(seconds=5))
    second = created(bucket, "a.txt", "e2")
    await send(bus, bridge, minio_notification(first), minio_notification(second))
    await window_passed(bus)
    # both again, and the older one alone: each was announced already, or is older than that
    await send(bus, bridge, minio_notification(second), minio_notification(first))
    events = await bucket_events(bus, bucket)
    assert kinds(events) == ["created", "created"]
    assert [e.json_data()["s3"]["object"]["eTag"] for e in events] == ["e1", "e2"]
    # a newer write of the key is still announced
    third = created(bucket, "a.txt", "e3")
    await send(bus, bridge, minio_notification(third))
    assert len(await bucket_events(bus, bucket)) == 3
