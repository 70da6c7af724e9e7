"""The SeaweedFS bridge against a real SeaweedFS filer and a real nats-server."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from eventbus.buckets import BucketOwners
from eventbus.connection import Bus
from eventbus.seaweed_bridge import CURSOR_KEY, SeaweedBridge
from eventbus.storage import OBJECT_CREATED_MULTIPART, S3Storage
from eventbus.storage.seaweedfs import EmbeddedSeaweed
from eventbus.storage_events import StorageLedger
from eventbus.streams import ensure_layout
from eventbus.types import CloudEvent
from tests.eventbus.test_storage_events import PREFIX, bucket_events, check_created
from tests.support import eventually

PART = 5 * 1024 * 1024
Starter = Callable[[], Awaitable[SeaweedBridge]]


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    connected = await Bus.connect(nats_url, name="test-seaweed-bridge", prefix=PREFIX)
    await ensure_layout(connected.js)
    yield connected
    await connected.close()


@pytest.fixture
async def store(seaweed: EmbeddedSeaweed) -> AsyncIterator[S3Storage]:
    s3 = S3Storage(
        seaweed.s3_endpoint,
        access_key=seaweed.access_key,
        secret_key=seaweed.secret_key,
        secure=False,
        part_size=PART,
    )
    yield s3
    await s3.close()


@pytest.fixture
def ledger(bus: Bus) -> StorageLedger:
    return StorageLedger(bus, kv_bucket=f"ledger_{uuid.uuid4().hex[:8]}")


@pytest.fixture
async def start_bridge(
    bus: Bus, seaweed: EmbeddedSeaweed, ledger: StorageLedger
) -> AsyncIterator[Callable[[], Awaitable[SeaweedBridge]]]:
    started: list[SeaweedBridge] = []

    async def start() -> SeaweedBridge:
        bridge = SeaweedBridge(bus, seaweed.filer, ledger=ledger, owners=BucketOwners(bus))
        await bridge.start()
        started.append(bridge)
        return bridge

    yield start
    for bridge in started:
        await bridge.stop()


async def events_of(bus: Bus, bucket: str, count: int, timeout: float = 30.0) -> list[CloudEvent]:
    """The bucket's storage events once there are ``count`` (and no more a moment later)."""

    async def arrived() -> bool:
        return len(await bucket_events(bus, bucket)) >= count

    with contextlib.suppress(AssertionError):  # the caller's assertion says what came
        await eventually(arrived, timeout=timeout)
    await asyncio.sleep(0.5)  # anything extra would show up now
    return await bucket_events(bus, bucket)


async def test_writes_and_deletes_are_one_event_each(
    bus: Bus, store: S3Storage, start_bridge: Starter
) -> None:
    await start_bridge()
    bucket = f"sw-{uuid.uuid4().hex[:10]}"
    await store.create_bucket(bucket)
    key = "in/dir with space/photo+1.jpg"
    first = await store.put(bucket, key, b"one", content_type="image/jpeg", metadata={"a": "1"})
    second = await store.put(bucket, key, b"two!", content_type="text/plain")
    big = await store.put(bucket, "big.bin", b"x" * (PART + 1000))  # two parts
    assert await store.delete(bucket, key)
    events = await events_of(bus, bucket, 4)
    assert [e.type.rsplit(".", 1)[1] for e in events] == [
        "created",
        "created",
        "created",
        "deleted",
    ]
    assert [e.subject for e in events] == [key, key, "big.bin", key]
    for event, info in zip(events, (first, second, big), strict=False):
        record = check_created(event, "seaweedfs", info)
        assert record["eventSource"] == "seaweedfs:filer"
    assert events[0].json_data()["s3"]["object"]["userMetadata"]["X-Amz-Meta-A"] == "1"
    assert big.is_multipart and events[2].json_data()["eventName"] == OBJECT_CREATED_MULTIPART
    assert events[3].source == f"/storage/seaweedfs/{bucket}"
    assert len({e.id for e in events}) == 4


async def test_resumes_where_it_stopped_and_never_repeats(
    bus: Bus, store: S3Storage, start_bridge: Starter, ledger: StorageLedger
) -> None:
    bridge = await start_bridge()
    bucket = f"sw-{uuid.uuid4().hex[:10]}"
    await store.create_bucket(bucket)
    await store.put(bucket, "before", b"0")
    await events_of(bus, bucket, 1)
    await bridge.stop()
    stopped_at = await ledger.cursor(CURSOR_KEY)
    assert stopped_at is not None and stopped_at >= bridge.done_ns > 0
    await asyncio.gather(*(store.put(bucket, f"k{i:02d}", b"x") for i in range(20)))
    assert len(await bucket_events(bus, bucket)) == 1  # nobody announced them yet
    again = await start_bridge()
    events = await events_of(bus, bucket, 21)
    assert sorted(e.subject or "" for e in events) == ["before"] + [f"k{i:02d}" for i in range(20)]
    assert again.published == 20
    last = again.done_ns
    await again.stop()
    # a resume point far behind (lost, or the filer's log read again) replays every change:
    # the ledger knows each one, whatever JetStream's de-duplication window says
    await ledger.set_cursor(CURSOR_KEY, stopped_at - 10**9)
    replay = await start_bridge()
    await eventually(lambda: replay.done_ns >= last, timeout=30)
    assert replay.published == 0
    assert len(await bucket_events(bus, bucket)) == 21
