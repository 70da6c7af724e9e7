"""Storage events of the platform's own writes and deletes: one each, in the S3 record shape."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from moto.server import ThreadedMotoServer
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig, DeliverPolicy

from eventbus.codec import from_nats
from eventbus.connection import Bus
from eventbus.errors import BusUnavailableError
from eventbus.publish import publish_event
from eventbus.server import EmbeddedNats
from eventbus.storage import LocalStorage, ObjectInfo, S3Storage, Storage, unescape_key
from eventbus.storage_events import (
    created_event,
    emit_created,
    emit_deleted,
    event_kind,
    storage_event,
    storage_event_id,
    time_sequencer,
)
from eventbus.streams import ensure_layout
from eventbus.types import EVENTS_STREAM, CloudEvent

PREFIX = "io.deepfaas"


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    connected = await Bus.connect(nats_url, name="test-storage-events", prefix=PREFIX)
    await ensure_layout(connected.js)
    yield connected
    await connected.close()


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalStorage]:
    store = LocalStorage(tmp_path / "store")
    yield store
    await store.close()


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop()


@pytest.fixture
async def s3(moto_endpoint: str) -> AsyncIterator[S3Storage]:
    async with httpx.AsyncClient() as client:
        (await client.post(f"http://{moto_endpoint}/moto-api/reset")).raise_for_status()
    store = S3Storage(
        moto_endpoint,
        access_key="testing",
        secret_key="testing",
        secure=False,
        region="us-east-1",
        part_size=5 * 1024 * 1024,
    )
    yield store
    await store.close()


async def bucket_events(bus: Bus, bucket: str) -> list[CloudEvent]:
    """Every storage event of ``bucket`` now in the EVENTS stream, in order."""
    config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL, filter_subject="events.storage.>")
    sub = await bus.js.pull_subscribe("events.storage.>", stream=EVENTS_STREAM, config=config)
    try:
        pending = (await sub.consumer_info()).num_pending
        found: list[CloudEvent] = []
        while pending:
            msgs = await sub.fetch(min(pending, 256), timeout=2)
            pending -= len(msgs)
            for msg in msgs:
                event = from_nats(msg.headers, msg.data)
                if event.extensions.get("bucket") == bucket:
                    found.append(event)
        return found
    finally:
        await sub.unsubscribe()


def check_created(event: CloudEvent, store: str, info: ObjectInfo) -> dict[str, Any]:
    """Assert the attributes and record of a created event; the record."""
    assert event.type == f"{PREFIX}.storage.object.created"
    assert event.source == f"/storage/{store}/{info.bucket}"
    assert event.subject == info.key
    assert event.extensions == {"bucket": info.bucket, "namespace": "default"}
    assert event.datacontenttype == "application/json"
    record: dict[str, Any] = event.json_data()
    obj = record["s3"]["object"]
    assert record["eventVersion"] == "2.0"
    assert record["s3"]["bucket"]["name"] == info.bucket
    assert unescape_key(obj["key"]) == info.key
    assert obj.get("size", 0) == info.size
    assert obj["eTag"] == info.etag
    assert obj["contentType"] == info.content_type
    assert event.id == storage_event_id(info.bucket, info.key, info.etag, obj["sequencer"])
    return record


async def new_bucket(store: Storage) -> str:
    name = f"ev-{uuid.uuid4().hex[:12]}"
    await store.create_bucket(name)
    return name


async def test_put_overwrite_delete_give_one_event_each(bus: Bus, local: LocalStorage) -> None:
    bucket = await new_bucket(local)
    key = "in/dir with space/photo+1.jpg"
    first = await local.put(bucket, key, b"one", content_type="image/jpeg", metadata={"a": "1"})
    ev1 = await emit_created(bus, local, first, namespace="default")
    second = await local.put(bucket, key, b"two!", content_type="image/jpeg")
    ev2 = await emit_created(bus, local, second, namespace="default")
    assert await local.delete(bucket, key)
    ev3 = await emit_deleted(bus, local, bucket, key, namespace="default")

    events = await bucket_events(bus, bucket)
    assert [e.id for e in events] == [ev1.id, ev2.id, ev3.id]
    record = check_created(events[0], "local", first)
    assert record["eventName"] == "s3:ObjectCreated:Put"
    assert record["s3"]["object"]["userMetadata"]["X-Amz-Meta-A"] == "1"
    assert record["s3"]["object"]["key"] == "in%2Fdir+with+space%2Fphoto%2B1.jpg"
    check_created(events[1], "local", second)
    assert events[0].id != events[1].id

    deleted = events[2]
    assert deleted.type == f"{PREFIX}.storage.object.deleted"
    assert deleted.source == f"/storage/local/{bucket}" and deleted.subject == key
    removed = deleted.json_data()
    assert removed["eventName"] == "s3:ObjectRemoved:Delete"
    assert "size" not in removed["s3"]["object"] and "eTag" not in removed["s3"]["object"]
    sequencer = removed["s3"]["object"]["sequencer"]
    assert deleted.id == storage_event_id(bucket, key, None, sequencer)


async def test_same_bytes_written_twice_are_two_events(bus: Bus, local: LocalStorage) -> None:
    bucket = await new_bucket(local)
    first = await emit_created(
        bus, local, await local.put(bucket, "k", b"same"), namespace="default"
    )
    second = await emit_created(
        bus, local, await local.put(bucket, "k", b"same"), namespace="default"
    )
    assert first.id != second.id
    assert len(await bucket_events(bus, bucket)) == 2


async def test_publishing_an_event_again_is_a_duplicate(bus: Bus, local: LocalStorage) -> None:
    bucket = await new_bucket(local)
    event = await emit_created(bus, local, await local.put(bucket, "k", b"x"), namespace="team-a")
    assert event.extensions["namespace"] == "team-a"
    ack = await publish_event(bus, event)
    assert ack.duplicate
    assert [e.id for e in await bucket_events(bus, bucket)] == [event.id]


async def test_s3_backend_events_name_the_store_and_multipart(bus: Bus, s3: S3Storage) -> None:
    bucket = await new_bucket(s3)
    small = await s3.put(bucket, "a/b.txt", b"hello", content_type="text/plain")
    big_body = b"z" * (11 * 1024 * 1024)
    big = await s3.put(bucket, "big.bin", big_body)
    await emit_created(bus, s3, small, namespace="default")
    await emit_created(bus, s3, big, namespace="default")
    events = await bucket_events(bus, bucket)
    assert len(events) == 2
    assert check_created(events[0], "s3", small)["eventName"] == "s3:ObjectCreated:Put"
    record = check_created(events[1], "s3", big)
    assert record["eventName"] == "s3:ObjectCreated:CompleteMultipartUpload"
    assert big.etag.endswith("-3")
    assert hashlib.md5(big_body).hexdigest() != big.etag  # a multipart ETag, not an MD5


async def test_storage_event_is_pure_and_deterministic() -> None:
    moment = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    info = ObjectInfo("bkt", "k/ü x.bin", 3, "abc", "text/plain", moment)
    unconnected = Bus(NATS(), "org.example")  # only its prefix is read: nothing is sent

    one = created_event(unconnected, "local", info, moment, namespace="default")
    two = created_event(unconnected, "local", info, moment, namespace="default")
    assert one == two and one.type == "org.example.storage.object.created"
    assert one.time == moment and one.subject == "k/ü x.bin"
    assert one.id == storage_event_id("bkt", "k/ü x.bin", "abc", time_sequencer(moment))
    later = created_event(
        unconnected,
        "local",
        info,
        moment.replace(microsecond=123457),
        namespace="default",
    )
    assert later.id != one.id
    deleted = storage_event(
        event_prefix="p.q",
        store_name="s3",
        kind="deleted",
        bucket="bkt",
        key="k",
        etag="ignored-for-deletes",
        sequencer="1",
        time=moment,
        record={"eventName": "s3:ObjectRemoved:Delete"},
        namespace="team-b",
    )
    assert deleted.id == storage_event_id("bkt", "k", None, "1")
    assert deleted.extensions == {"bucket": "bkt", "namespace": "team-b"}
    assert deleted.type == "p.q.storage.object.deleted" and deleted.source == "/storage/s3/bkt"


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("s3:ObjectCreated:Put", "created"),
        ("s3:ObjectCreated:CompleteMultipartUpload", "created"),
        ("s3:ObjectCreated:Copy", "created"),
        ("s3:ObjectRemoved:Delete", "deleted"),
        ("s3:ObjectRemoved:DeleteMarkerCreated", "deleted"),
        ("s3:ObjectAccessed:Get", None),
        ("", None),
    ],
)
def test_event_kind(name: str, kind: str | None) -> None:
    assert event_kind(name) == kind


async def test_unreachable_bus_raises_bus_unavailable(tmp_path: Path, local: LocalStorage) -> None:
    server = EmbeddedNats(store_dir=tmp_path / "nats").start()
    bus = await Bus.connect(server.admin_url, name="test-down", prefix=PREFIX)
    try:
        await ensure_layout(bus.js)
        bucket = await new_bucket(local)
        info = await local.put(bucket, "k", b"x")
        server.stop()
        with pytest.raises(BusUnavailableError, match="could not be published"):
            await emit_created(bus, local, info, namespace="default", timeout=0.2)
    finally:
        server.stop()
        with contextlib.suppress(OSError):  # the connection is gone already
            await bus.nc.close()
