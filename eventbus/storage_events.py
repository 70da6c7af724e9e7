"""Storage events: one CloudEvent per completed write or delete, the S3 record as its data.

Attributes: ``type`` is ``<prefix>.storage.object.created`` or ``…deleted``; ``source`` is
``/storage/<store>/<bucket>`` (``local``, ``s3``, or ``minio`` for the bridge); ``subject`` is
the key as it is (not escaped); the extension ``bucket`` names the bucket and ``namespace`` its
owner (`eventbus.buckets`), so only that namespace's triggers and subscriptions see the event;
``data`` is the S3 event record (``eventbus.storage.records``). The id is
``sha256(bucket \\0 key \\0 (etag or "deleted") \\0 sequencer)[:32]``: the sequencer is per write
(the event time in nanoseconds, upper-case hex, as MinIO writes it), so each completed write is
one event while publishing the same one again (a retry, a redelivered MinIO message) is a
JetStream duplicate. The ledger remembers the last event of each key with its sequencer (as
nanoseconds), so a record replayed after JetStream's de-duplication window, or one older than
the key's last (a stale ``created`` after ``deleted``), is not announced again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import nats.errors
import orjson
from nats.js.errors import BucketNotFoundError

from eventbus.connection import Bus
from eventbus.errors import BusUnavailableError
from eventbus.kv import entry
from eventbus.namespaces import EVENT_ATTRIBUTE
from eventbus.publish import publish_event
from eventbus.storage.errors import InvalidNotificationError
from eventbus.storage.records import (
    RecordContext,
    S3Record,
    object_created_record,
    object_removed_record,
)
from eventbus.storage.types import ObjectInfo, Storage
from eventbus.streams import LEDGER_KV, Layout, ensure_bucket
from eventbus.types import CloudEvent

log = logging.getLogger(__name__)

CREATED_SUFFIX: Final = "storage.object.created"
DELETED_SUFFIX: Final = "storage.object.deleted"
#: the store name in the ``source`` of events that the MinIO bridge (or reconciler) emits
MINIO_STORE: Final = "minio"
_PUBLISH_TRIES: Final = 3
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

StorageEventKind = Literal["created", "deleted"]


def event_kind(event_name: str) -> StorageEventKind | None:
    """``created`` for ``s3:ObjectCreated:*``, ``deleted`` for ``s3:ObjectRemoved:*``, else None."""
    if event_name.startswith("s3:ObjectCreated:"):
        return "created"
    if event_name.startswith("s3:ObjectRemoved:"):
        return "deleted"
    return None


def storage_event_id(bucket: str, key: str, etag: str | None, sequencer: str) -> str:
    """The deterministic event id of one write (or delete) of a key."""
    text = f"{bucket}\0{key}\0{etag or 'deleted'}\0{sequencer}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def storage_source(store_name: str, bucket: str) -> str:
    """The CloudEvent ``source`` of a store's bucket: ``/storage/<store>/<bucket>``."""
    return f"/storage/{store_name}/{bucket}"


def time_sequencer(moment: datetime) -> str:
    """A sequencer from a time, as MinIO makes one: nanoseconds since the epoch, hex."""
    return f"{time_ns(moment):X}"


def time_ns(moment: datetime) -> int:
    """Nanoseconds since the epoch (to the microsecond a datetime holds)."""
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


def sequencer_ns(sequencer: str | None, moment: datetime) -> int:
    """A record's order among the writes of its key: its sequencer (MinIO's and ours are
    nanoseconds in hex), else its time."""
    if sequencer:
        try:
            return int(sequencer, 16)
        except ValueError:
            pass
    return time_ns(moment)


def storage_event(
    *,
    event_prefix: str,
    store_name: str,
    kind: StorageEventKind,
    bucket: str,
    key: str,
    etag: str | None,
    sequencer: str,
    time: datetime,
    record: Mapping[str, Any],
    namespace: str,
) -> CloudEvent:
    """The storage CloudEvent of one S3 record, ``namespace`` being the bucket's owner."""
    suffix = CREATED_SUFFIX if kind == "created" else DELETED_SUFFIX
    return CloudEvent.create(
        type=f"{event_prefix}.{suffix}",
        source=storage_source(store_name, bucket),
        subject=key,
        id=storage_event_id(bucket, key, etag if kind == "created" else None, sequencer),
        data=dict(record),
        extensions={"bucket": bucket, EVENT_ATTRIBUTE: namespace},
        time=time,
    )


def _sequencer_of(record: Mapping[str, Any], moment: datetime) -> str:
    value = record.get("s3", {}).get("object", {}).get("sequencer")
    return value if isinstance(value, str) and value else time_sequencer(moment)


def created_event(
    bus: Bus,
    store_name: str,
    info: ObjectInfo,
    time: datetime,
    *,
    namespace: str,
    context: RecordContext | None = None,
) -> CloudEvent:
    """The created event of a write described by ``info`` that completed at ``time``."""
    record = object_created_record(info, time=time, context=context)
    return storage_event(
        event_prefix=bus.prefix,
        store_name=store_name,
        kind="created",
        bucket=info.bucket,
        key=info.key,
        etag=info.etag,
        sequencer=_sequencer_of(record, time),
        time=time,
        record=record,
        namespace=namespace,
    )


async def emit_created(
    bus: Bus, store: Storage, info: ObjectInfo, *, namespace: str, timeout: float = 5.0
) -> CloudEvent:
    """Publish the created event of a completed write in a bucket of ``namespace`` (retried;
    BusUnavailableError at last)."""
    event = created_event(bus, store.name, info, datetime.now(UTC), namespace=namespace)
    await _publish(bus, event, timeout)
    return event


async def emit_deleted(
    bus: Bus, store: Storage, bucket: str, key: str, *, namespace: str, timeout: float = 5.0
) -> CloudEvent:
    """Publish the deleted event of a key that existed in a bucket of ``namespace`` (retried;
    BusUnavailableError at last)."""
    now = datetime.now(UTC)
    record = object_removed_record(bucket, key, time=now)
    event = storage_event(
        event_prefix=bus.prefix,
        store_name=store.name,
        kind="deleted",
        bucket=bucket,
        key=key,
        etag=None,
        sequencer=_sequencer_of(record, now),
        time=now,
        record=record,
        namespace=namespace,
    )
    await _publish(bus, event, timeout)
    return event


def bridge_event(bus: Bus, record: S3Record, *, namespace: str) -> CloudEvent:
    """The storage CloudEvent of a record from MinIO, ``namespace`` owning its bucket
    (InvalidNotificationError if no write)."""
    kind = event_kind(record.event_name)
    if kind is None:
        raise InvalidNotificationError(
            f"{record.event_name} is neither an object write nor a delete",
            bucket=record.bucket,
            key=record.key,
            reason="unsupported event name",
        )
    return storage_event(
        event_prefix=bus.prefix,
        store_name=MINIO_STORE,
        kind=kind,
        bucket=record.bucket,
        key=record.key,
        etag=record.etag,
        sequencer=record.sequencer or time_sequencer(record.time),
        time=record.time,
        record=record.raw,
        namespace=namespace,
    )


async def _publish(bus: Bus, event: CloudEvent, timeout: float) -> None:
    """Publish, trying again briefly; the same id makes a repeat a JetStream duplicate."""
    for attempt in range(1, _PUBLISH_TRIES + 1):
        try:
            await publish_event(bus, event, timeout=timeout)
            return
        except nats.errors.Error as exc:
            if attempt == _PUBLISH_TRIES:
                raise BusUnavailableError(
                    f"the storage event of {event.subject!r} could not be published: {exc}",
                    event_id=event.id,
                ) from exc
            log.warning("storage event %s: publish failed (%s); trying again", event.id, exc)
            await asyncio.sleep(0.2 * attempt)


@dataclass(frozen=True)
class LedgerEntry:
    """The last storage event emitted for a key; ``etag`` is None after a delete."""

    bucket: str
    key: str
    etag: str | None
    event_id: str
    #: when the write happened (the record's time, or the listing's last-modified)
    modified: datetime
    #: ``bridge``, ``reconciler`` or ``seaweedfs``
    origin: str
    #: the write's order among the key's writes (nanoseconds; 0: from ``modified``)
    sequencer: int = 0

    @property
    def order(self) -> int:
        """The sequencer, or the write's time for entries written without one."""
        return self.sequencer or time_ns(self.modified)

    def announced(self, event_id: str, sequencer: int) -> bool:
        """Whether the event ``event_id`` of the write at ``sequencer`` is this entry's, or
        older than it: a replay (however late) or a stale record, not to be announced again."""
        return event_id == self.event_id or sequencer <= self.order


class StorageLedger:
    """Which storage event was emitted last for each key, in a KV bucket (one entry a key)."""

    def __init__(
        self, bus: Bus, *, kv_bucket: str = LEDGER_KV, layout: Layout | None = None
    ) -> None:
        self.bus = bus
        self.kv_bucket = kv_bucket
        self.layout = layout

    async def ensure(self) -> None:
        """Create the KV bucket unless it exists, as the layout declares it (`LEDGER_KV`)."""
        try:
            await self.bus.kv(self.kv_bucket)
        except BucketNotFoundError:
            await ensure_bucket(self.bus.js, LEDGER_KV, self.layout, name=self.kv_bucket)

    @staticmethod
    def _key(bucket: str, key: str) -> str:
        return hashlib.sha256(f"{bucket}\0{key}".encode("utf-8", "surrogatepass")).hexdigest()

    async def get(self, bucket: str, key: str) -> LedgerEntry | None:
        """The key's last event, or None."""
        found = await entry(await self.bus.kv(self.kv_bucket), self._key(bucket, key))
        if found is None or not found.value:
            return None
        raw = orjson.loads(found.value)
        return LedgerEntry(
            bucket=raw["bucket"],
            key=raw["key"],
            etag=raw["etag"],
            event_id=raw["event_id"],
            modified=datetime.fromisoformat(raw["modified"]),
            origin=raw["origin"],
            sequencer=int(raw.get("sequencer") or 0),
        )

    async def record(self, entry: LedgerEntry) -> None:
        """Remember an emitted event as the key's last."""
        kv = await self.bus.kv(self.kv_bucket)
        value = {
            "bucket": entry.bucket,
            "key": entry.key,
            "etag": entry.etag,
            "event_id": entry.event_id,
            "modified": entry.modified.isoformat(),
            "origin": entry.origin,
            "sequencer": entry.sequencer,
        }
        await kv.put(self._key(entry.bucket, entry.key), orjson.dumps(value))

    async def cursor(self, name: str) -> int | None:
        """A source's resume point (e.g. the SeaweedFS bridge's last ``ts_ns``), or None."""
        found = await entry(await self.bus.kv(self.kv_bucket), name)
        return int(found.value) if found is not None and found.value else None

    async def set_cursor(self, name: str, value: int) -> None:
        """Keep a source's resume point (after what it covers is safely published)."""
        kv = await self.bus.kv(self.kv_bucket)
        await kv.put(name, str(value).encode())
