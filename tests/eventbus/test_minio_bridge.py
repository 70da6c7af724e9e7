"""The MinIO bridge and the reconciler against a real nats-server, fed MinIO-format messages."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from eventbus.buckets import BucketOwners
from eventbus.connection import Bus
from eventbus.dlq import DeadLetter
from eventbus.minio_bridge import RECONCILER_SOURCE, MinioBridge, StorageReconciler
from eventbus.storage import (
    LocalStorage,
    ObjectInfo,
    RecordContext,
    Storage,
    escape_key,
    minio_notification,
    object_created_record,
    object_removed_record,
)
from eventbus.storage_events import StorageLedger, storage_event_id
from eventbus.streams import ensure_layout
from eventbus.subjects import dlq_subject
from eventbus.triggers import Trigger, TriggerStore
from eventbus.types import DLQ_STREAM, EVENTS_STREAM, CloudEvent
from tests.eventbus.test_storage_events import (  # noqa: F401 (fixtures used by name)
    PREFIX,
    bucket_events,
    moto_endpoint,
    s3,
)
from tests.support import eventually

MINIO = RecordContext(event_source="minio:s3", region="us-east-1", principal_id="minioadmin")

# A message exactly as MinIO's NATS target sends it (from a MinIO server's log), for a key
# with a space, a slash and a plus sign.
MINIO_MESSAGE = (
    b'{"EventName":"s3:ObjectCreated:Put","Key":"photos/2026/dir with space/a+b.jpg",'
    b'"Records":[{"eventVersion":"2.0","eventSource":"minio:s3","awsRegion":"",'
    b'"eventTime":"2026-05-01T10:11:12.345Z","eventName":"s3:ObjectCreated:Put",'
    b'"userIdentity":{"principalId":"minioadmin"},"requestParameters":{"principalId":'
    b'"minioadmin","region":"","sourceIPAddress":"172.17.0.1"},"responseElements":'
    b'{"x-amz-id-2":"dd9025bab4ad464b049177c95eb6ebf374d3b3fd1af9251148b658df7ac2e3e8",'
    b'"x-amz-request-id":"18A9C2D2F6A8B0C1","x-minio-deployment-id":"b2a1",'
    b'"x-minio-origin-endpoint":"http://172.17.0.2:9000"},"s3":{"s3SchemaVersion":"1.0",'
    b'"configurationId":"Config","bucket":{"name":"photos","ownerIdentity":{"principalId":'
    b'"minioadmin"},"arn":"arn:aws:s3:::photos"},"object":{"key":'
    b'"2026%2Fdir+with+space%2Fa%2Bb.jpg","size":5,"eTag":"5d41402abc4b2a76b9719d911017c592",'
    b'"contentType":"image/jpeg","userMetadata":{"content-type":"image/jpeg"},'
    b'"sequencer":"18A9C2D2F6B4A3E7"}},"source":{"host":"172.17.0.1","port":"",'
    b'"userAgent":"MinIO (linux; amd64) minio-go/v7.0.70"}}]}'
)


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    connected = await Bus.connect(nats_url, name="test-minio-bridge", prefix=PREFIX)
    await ensure_layout(connected.js)
    yield connected
    await connected.close()


@pytest.fixture
def ledger(bus: Bus) -> StorageLedger:
    return StorageLedger(bus, kv_bucket=f"ledger_{uuid.uuid4().hex[:8]}")


@pytest.fixture
async def bridge(bus: Bus, ledger: StorageLedger) -> AsyncIterator[MinioBridge]:
    tag = uuid.uuid4().hex[:8]
    started = MinioBridge(
        bus,
        stream=f"MINIO_{tag}",
        subject=f"minio.{tag}",
        durable=f"bridge-{tag}",
        ledger=ledger,
        retry_base=0.05,
        retry_max=0.2,
    )
    await started.start()
    yield started
    await started.stop()


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalStorage]:
    store = LocalStorage(tmp_path / "store")
    yield store
    await store.close()


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> Storage:
    found: Storage = request.getfixturevalue(request.param)
    return found


def bucket_name() -> str:
    return f"mb-{uuid.uuid4().hex[:12]}"


def created(
    bucket: str, key: str, etag: str, *, size: int = 5, time: datetime | None = None
) -> dict[str, Any]:
    info = ObjectInfo(bucket, key, size, etag, "text/plain", datetime.now(UTC))
    return object_created_record(info, context=MINIO, time=time)


async def send(bus: Bus, bridge: MinioBridge, *bodies: bytes) -> None:
    """Publish as MinIO does (JetStream, no headers) and wait until the bridge settled all."""
    for body in bodies:
        await bus.js.publish(bridge.subject, body)
    last = (await bus.js.stream_info(bridge.stream)).state.last_seq

    async def settled() -> bool:
        info = await bus.js.consumer_info(bridge.stream, bridge.durable)
        return info.ack_floor.stream_seq >= last and not info.num_ack_pending

    await eventually(settled)


async def dead_letters(bus: Bus, subject: str) -> list[DeadLetter]:
    letters_of = dlq_subject("bridge", "minio")
    config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL, filter_subject=letters_of)
    sub = await bus.js.pull_subscribe(letters_of, stream=DLQ_STREAM, config=config)
    try:
        pending = (await sub.consumer_info()).num_pending
        msgs = await sub.fetch(pending, timeout=2) if pending else []
        letters = [DeadLetter.model_validate_json(m.data) for m in msgs]
        return [letter for letter in letters if letter.event.get("subject") == subject]
    finally:
        await sub.unsubscribe()


def check(event: CloudEvent, record: dict[str, Any], kind: str, owner: str = "default") -> None:
    bucket = record["s3"]["bucket"]["name"]
    obj = record["s3"]["object"]
    key = orjson.loads(minio_notification(record))["Key"].partition("/")[2]
    assert event.type == f"{PREFIX}.storage.object.{kind}"
    assert event.source == f"/storage/minio/{bucket}"
    assert event.subject == key
    assert event.extensions == {"bucket": bucket, "namespace": owner}
    assert event.json_data() == record
    etag = obj.get("eTag") if kind == "created" else None
    assert event.id == storage_event_id(bucket, key, etag, obj["sequencer"])


async def test_a_real_minio_message_becomes_one_event(bus: Bus, bridge: MinioBridge) -> None:
    await send(bus, bridge, MINIO_MESSAGE)
    [event] = await bucket_events(bus, "photos")
    record = orjson.loads(MINIO_MESSAGE)["Records"][0]
    check(event, record, "created")
    assert event.subject == "2026/dir with space/a+b.jpg"
    assert event.time == datetime(2026, 5, 1, 10, 11, 12, 345000, tzinfo=UTC)


KEYS = [
    "plain.txt",
    "dir with space/file name.txt",
    "a/b/c/deep.bin",
    "plus+sign/1+1=2.txt",
    "ünïcode/データ ✓.bin",
    "literal%20percent.txt",
]


async def test_put_multipart_and_delete_records(bus: Bus, bridge: MinioBridge) -> None:
    bucket = bucket_name()
    puts = [created(bucket, key, f"{i:032x}") for i, key in enumerate(KEYS)]
    multipart = created(bucket, "big/model.onnx", "9b2cf535f27731c974343645a3985328-3")
    delete = object_removed_record(bucket, "dir with space/file name.txt", context=MINIO)
    records = [*puts, multipart, delete]
    await send(bus, bridge, *(minio_notification(r) for r in records))

    events = await bucket_events(bus, bucket)
    assert len(events) == len(records)
    for event, record in zip(events, puts, strict=False):
        check(event, record, "created")
        assert record["s3"]["object"]["key"] == escape_key(event.subject or "")
    check(events[-2], multipart, "created")
    assert events[-2].json_data()["eventName"] == "s3:ObjectCreated:CompleteMultipartUpload"
    check(events[-1], delete, "deleted")
    assert puts[1]["s3"]["object"]["key"] == "dir+with+space%2Ffile+name.txt"


async def test_events_carry_the_namespace_that_owns_the_bucket(
    bus: Bus, bridge: MinioBridge
) -> None:
    bucket = bucket_name()
    await BucketOwners(bus).claim(bucket, "team-b")
    record = created(bucket, "a.txt", "0" * 32)
    gone = object_removed_record(bucket, "a.txt", context=MINIO)
    await send(bus, bridge, minio_notification(record), minio_notification(gone))
    events = await bucket_events(bus, bucket)
    check(events[0], record, "created", owner="team-b")
    check(events[1], gone, "deleted", owner="team-b")


async def test_a_duplicate_message_gives_one_event(bus: Bus, bridge: MinioBridge) -> None:
    bucket = bucket_name()
    body = minio_notification(created(bucket, "k.txt", "a" * 32))
    await send(bus, bridge, body, body)
    await send(bus, bridge, body)  # long after: the ledger knows it
    assert len(await bucket_events(bus, bucket)) == 1


async def test_malformed_messages_are_dead_lettered(bus: Bus, bridge: MinioBridge) -> None:
    bucket = bucket_name()
    good = created(bucket, "after.txt", "b" * 32)
    bad_key = created(bucket, "x", "c" * 32)
    bad_key["s3"]["object"]["key"] = "bad%zzescape"
    no_bucket = created(bucket, "y", "d" * 32)
    del no_bucket["s3"]["bucket"]
    bodies = [
        b"not json",
        b'{"Records": []}',
        orjson.dumps({"Records": [bad_key]}),
        orjson.dumps({"Records": [no_bucket]}),
        minio_notification(good),
    ]
    await send(bus, bridge, *bodies)

    [event] = await bucket_events(bus, bucket)
    check(event, good, "created")
    letters = await dead_letters(bus, bridge.subject)
    assert len(letters) == 4
    kept = [letter.cloud_event() for letter in letters]
    raw = [e.data for e in kept if e.datacontenttype == "application/octet-stream"]
    assert raw == [b"not json"]  # kept byte for byte; JSON bodies are kept as JSON values
    as_json = [orjson.loads(e.data or b"") for e in kept if e.datacontenttype == "application/json"]
    assert sorted(as_json, key=orjson.dumps) == sorted(
        (orjson.loads(b) for b in bodies[1:4]), key=orjson.dumps
    )
    errors = " | ".join(sorted(letter.error for letter in letters))
    assert "not JSON" in errors and "badly escaped key" in errors and "malformed" in errors
    info = await bus.js.consumer_info(bridge.stream, bridge.durable)
    assert info.num_redelivered == 0  # terminated, not retried


async def test_other_event_names_are_acked_without_event(bus: Bus, bridge: MinioBridge) -> None:
    bucket = bucket_name()
    info = ObjectInfo(bucket, "k", 1, "e" * 32, "text/plain", datetime.now(UTC))
    accessed = object_created_record(info, event_name="s3:ObjectAccessed:Get", context=MINIO)
    await send(bus, bridge, minio_notification(accessed))
    assert await bucket_events(bus, bucket) == []
    assert await dead_letters(bus, bridge.subject) == []


async def test_a_failed_publish_is_retried(bus: Bus, bridge: MinioBridge) -> None:
    bucket = bucket_name()
    await bus.js.delete_stream(EVENTS_STREAM)
    try:
        await bus.js.publish(bridge.subject, minio_notification(created(bucket, "k", "f" * 32)))

        async def retried() -> int:
            info = await bus.js.consumer_info(bridge.stream, bridge.durable)
            return info.num_redelivered or 0

        await eventually(retried)  # the message is retried
    finally:
        await ensure_layout(bus.js)
    await send(bus, bridge)
    assert len(await bucket_events(bus, bucket)) == 1


async def put_objects(store: Storage, bucket: str, keys: list[str]) -> list[ObjectInfo]:
    await store.create_bucket(bucket)
    return [await store.put(bucket, key, key.encode()) for key in keys]


async def test_reconciler_emits_once_for_objects_without_events(
    bus: Bus, store: Storage, ledger: StorageLedger
) -> None:
    bucket = bucket_name()
    infos = await put_objects(store, bucket, ["in/a.txt", "in/sub/b.txt", "out/c.txt"])

    async def watched() -> list[tuple[str, str]]:
        return [(bucket, "in/"), (bucket, "in/sub/"), ("no-such-bucket", "")]

    reconciler = StorageReconciler(bus, store, ledger=ledger, watched=watched, min_age=0)
    emitted = await reconciler.reconcile()
    assert sorted(e.subject or "" for e in emitted) == ["in/a.txt", "in/sub/b.txt"]
    for event in emitted:
        info = next(i for i in infos if i.key == event.subject)
        assert event.type == f"{PREFIX}.storage.object.created"
        assert event.source == f"/storage/minio/{bucket}"
        record = event.json_data()
        assert record["eventSource"] == RECONCILER_SOURCE
        assert record["s3"]["object"]["eTag"] == info.etag
    assert await reconciler.reconcile() == []
    assert len(await bucket_events(bus, bucket)) == 2
    assert {e.extensions["namespace"] for e in emitted} == {"default"}

    owned = bucket_name()
    await BucketOwners(bus).claim(owned, "team-c")
    await put_objects(store, owned, ["in/x.txt"])

    async def watched_owned() -> list[tuple[str, str]]:
        return [(owned, "")]

    reconciler = StorageReconciler(bus, store, ledger=ledger, watched=watched_owned, min_age=0)
    [event] = await reconciler.reconcile()
    assert event.extensions == {"bucket": owned, "namespace": "team-c"}

    waiting = StorageReconciler(bus, store, ledger=ledger, watched=watched, min_age=3600)
    await store.put(bucket, "in/new.txt", b"new")
    assert await waiting.reconcile() == []  # young: its notification may be on the way


async def test_reconciler_and_bridge_announce_a_write_once(
    bus: Bus, bridge: MinioBridge, local: LocalStorage, ledger: StorageLedger
) -> None:
    bucket = bucket_name()
    seen, missed = await put_objects(local, bucket, ["seen.txt", "missed.txt"])
    moment = seen.last_modified + timedelta(milliseconds=3)
    await send(bus, bridge, minio_notification(created(bucket, "seen.txt", seen.etag, time=moment)))

    async def watched() -> list[tuple[str, str]]:
        return [(bucket, "")]

    reconciler = StorageReconciler(bus, local, ledger=ledger, watched=watched, min_age=0)
    [emitted] = await reconciler.reconcile()
    assert emitted.subject == "missed.txt"
    # MinIO's late notification of the write the reconciler announced: no second event
    late = created(bucket, "missed.txt", missed.etag, time=missed.last_modified)
    await send(bus, bridge, minio_notification(late))
    assert [e.subject for e in await bucket_events(bus, bucket)] == ["seen.txt", "missed.txt"]
    # a later write of other bytes is announced again
    rewritten = await local.put(bucket, "missed.txt", b"other bytes")
    await send(bus, bridge, minio_notification(created(bucket, "missed.txt", rewritten.etag)))
    assert len(await bucket_events(bus, bucket)) == 3
    assert await reconciler.reconcile() == []


async def test_reconciler_watches_the_buckets_of_triggers(
    bus: Bus, local: LocalStorage, ledger: StorageLedger
) -> None:
    bucket = bucket_name()
    await put_objects(local, bucket, ["in/x.csv", "other/y.csv"])
    name = f"t-{uuid.uuid4().hex[:8]}"
    await TriggerStore(bus).put(Trigger(name=name, function="fn", bucket=bucket, key_prefix="in/"))
    # another namespace's trigger on default's bucket never sees its events: not watched
    spy = f"team-b={name}"
    await TriggerStore(bus).put(Trigger(name=spy, function="team-b=fn", bucket=bucket))
    try:
        reconciler = StorageReconciler(bus, local, ledger=ledger, min_age=0)
        emitted = await reconciler.reconcile()
        assert [e.subject for e in emitted if e.extensions["bucket"] == bucket] == ["in/x.csv"]
    finally:
        await TriggerStore(bus).delete(name)
        await TriggerStore(bus).delete(spy)
