"""The MinIO bridge: MinIO's NATS notifications in, storage CloudEvents out; and a reconciler.

MinIO's NATS target (with ``MINIO_NOTIFY_NATS_JETSTREAM=on``) publishes one JSON message per
event on a subject of a stream that must exist first: the bridge declares it, reads it with a
durable pull consumer and publishes one storage event per record (``storage_events``), acking
only after; each event carries the namespace that owns its bucket (`eventbus.buckets`). A
malformed message is dead-lettered with the reason and terminated; a failed publish is retried
with backoff. MinIO's own delivery is lossy, so the reconciler lists the buckets that triggers
watch and emits the created event of any object the ledger has none for.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson
from nats.aio.msg import Msg
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from eventbus.backoff import Backoff
from eventbus.buckets import BucketOwners
from eventbus.connection import Bus
from eventbus.consume import fetch_batch, give_back, nak_all
from eventbus.dlq import dead_letter
from eventbus.namespaces import namespace_of
from eventbus.publish import publish_event
from eventbus.storage.errors import InvalidNotificationError, NoSuchBucketError, NoSuchKeyError
from eventbus.storage.records import RecordContext, S3Record, parse_minio_notification
from eventbus.storage.types import ObjectSummary, Storage
from eventbus.storage_events import (
    MINIO_STORE,
    LedgerEntry,
    StorageLedger,
    bridge_event,
    created_event,
    event_kind,
    sequencer_ns,
    time_ns,
)
from eventbus.streams import Layout, ensure_stream
from eventbus.types import CloudEvent

log = logging.getLogger(__name__)

DEFAULT_STREAM: Final = "MINIO"
DEFAULT_SUBJECT: Final = "minio.events"
DEFAULT_DURABLE: Final = "minio-bridge"
#: a write's time as MinIO's record and as a listing give it may differ by this much
SAME_WRITE: Final = timedelta(seconds=2)
#: the ``eventSource`` of records that the reconciler makes
RECONCILER_SOURCE: Final = "deepfaas:reconciler"

#: MinIO's stream's share of the bus's disk budget (`eventbus.streams`)
MINIO_SHARE: Final = 0.05

#: (bucket, key prefix) pairs to reconcile
Watched = Callable[[], Awaitable[Iterable[tuple[str, str]]]]


async def ensure_minio_stream(
    bus: Bus,
    *,
    stream: str = DEFAULT_STREAM,
    subject: str = DEFAULT_SUBJECT,
    max_age: float = 7 * 86_400,
    layout: Layout | None = None,
) -> None:
    """Create (or update) the stream MinIO's NATS target publishes into, with the layout's
    replicas and its share of the budget (its oldest records go first at the limit)."""
    config = StreamConfig(
        name=stream,
        subjects=[subject],
        max_age=max_age,
        storage=StorageType.FILE,
        duplicate_window=120.0,
        discard=DiscardPolicy.OLD,
    )
    await ensure_stream(bus.js, config, layout or Layout(), share=MINIO_SHARE)


class MinioBridge:
    """Turns each record of MinIO's NATS notifications into one storage CloudEvent."""

    def __init__(
        self,
        bus: Bus,
        *,
        stream: str = DEFAULT_STREAM,
        subject: str = DEFAULT_SUBJECT,
        durable: str = DEFAULT_DURABLE,
        ledger: StorageLedger | None = None,
        owners: BucketOwners | None = None,
        batch: int = 64,
        ack_wait: float = 30.0,
        max_tries: int = 20,
        retry_base: float = 0.5,
        retry_max: float = 30.0,
        layout: Layout | None = None,
    ) -> None:
        self.bus = bus
        self.layout = layout
        self.stream = stream
        self.subject = subject
        self.durable = durable
        self.ledger = ledger if ledger is not None else StorageLedger(bus)
        self.owners = owners if owners is not None else BucketOwners(bus)
        self.batch = batch
        self.ack_wait = ack_wait
        self.max_tries = max_tries
        self.backoff = Backoff(retry_base, retry_max)
        self._pull: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._fetching = False

    async def start(self) -> None:
        """Declare the stream, the ledger and the durable consumer; start consuming."""
        await ensure_minio_stream(
            self.bus, stream=self.stream, subject=self.subject, layout=self.layout
        )
        await self.ledger.ensure()
        try:
            await self.bus.js.consumer_info(self.stream, self.durable)
        except NotFoundError:
            config = ConsumerConfig(
                durable_name=self.durable,
                filter_subject=self.subject,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=self.ack_wait,
                max_deliver=-1,
                max_ack_pending=max(1000, self.batch * 4),
            )
            with contextlib.suppress(BadRequestError):  # another bridge created it meanwhile
                await self.bus.js.add_consumer(self.stream, config)
        self._pull = await self.bus.js.pull_subscribe_bind(durable=self.durable, stream=self.stream)
        self._stopping.clear()
        self._task = asyncio.create_task(self._consume(), name="minio-bridge")
        log.info("MinIO bridge reading %s (stream %s)", self.subject, self.stream)

    async def stop(self) -> None:
        """Stop after the batch in hand and release the pull subscription."""
        self._stopping.set()
        if self._task is not None:
            # while fetching nothing is in hand (a message fetched meanwhile is redelivered)
            if self._fetching or not (await asyncio.wait({self._task}, timeout=3.0))[0]:
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._pull is not None:
            await give_back(self._pull)  # what came and was not fetched: redelivered now
            self._pull = None

    async def _consume(self) -> None:
        while not self._stopping.is_set():
            self._fetching = True
            try:
                msgs = await fetch_batch(self._pull, self.batch)
            finally:
                self._fetching = False
            for index, msg in enumerate(msgs):  # in order: a put and a delete must not swap
                try:
                    await self.handle(msg)
                except asyncio.CancelledError:  # stopped mid-batch: the rest goes back now
                    await nak_all(msgs[index:])
                    raise

    async def handle(self, msg: Msg) -> None:
        """Forward every record of one MinIO message, then ack (term if malformed, nak if not)."""
        attempt = msg.metadata.num_delivered or 1
        try:
            records = parse_minio_notification(msg.data)
        except InvalidNotificationError as exc:
            await self._reject(msg, str(exc), attempt)
            return
        try:
            for record in records:
                await self.forward(record)
        except Exception as exc:
            if attempt >= self.max_tries:
                await self._reject(msg, f"gave up after {attempt} tries: {exc}", attempt)
                return
            delay = self.backoff.delay(attempt)
            log.warning("MinIO message %s: %s; retrying in %.1f s", msg.subject, exc, delay)
            await msg.nak(delay=delay)
            return
        await msg.ack()

    async def forward(self, record: S3Record) -> CloudEvent | None:
        """Publish a record's event unless the ledger shows it emitted; None if not a write."""
        kind = event_kind(record.event_name)
        if kind is None:
            log.debug("ignoring MinIO event %s on %s", record.event_name, record.key)
            return None
        event = bridge_event(self.bus, record, namespace=await self.owners.owner(record.bucket))
        order = sequencer_ns(record.sequencer, record.time)
        last = await self.ledger.get(record.bucket, record.key)
        # MinIO replays records (after its queue dir or a restart) with no regard for
        # JetStream's de-duplication window: the ledger decides by the record's own order
        if last is not None and (
            last.announced(event.id, order)
            or (
                kind == "created"
                and last.origin == "reconciler"
                and last.etag == record.etag
                and abs(record.time - last.modified) <= SAME_WRITE
            )
        ):
            log.debug("storage event %s was emitted already (or is stale)", event.id)
            return event
        await publish_event(self.bus, event)
        etag = record.etag if kind == "created" else None
        entry = LedgerEntry(
            record.bucket, record.key, etag, event.id, record.time, "bridge", sequencer=order
        )
        await self.ledger.record(entry)
        log.debug("storage event %s for %s/%s", event.id, record.bucket, record.key)
        return event

    async def _reject(self, msg: Msg, reason: str, attempt: int) -> None:
        body = bytes(msg.data)
        try:
            orjson.loads(body)
            content_type = "application/json"
        except orjson.JSONDecodeError:
            content_type = "application/octet-stream"  # kept as base64, byte for byte
        letter = CloudEvent(
            id=hashlib.sha256(body).hexdigest()[:32],
            source=f"/storage/{MINIO_STORE}",
            type=self.bus.event_type("storage.notification"),
            subject=msg.subject,
            datacontenttype=content_type,
            data=body,
        )
        try:
            await dead_letter(
                self.bus,
                kind="bridge",
                target=MINIO_STORE,
                event=letter,
                error=reason,
                attempts=attempt,
            )
        except Exception as exc:  # no dead letter: leave it to be redelivered
            log.warning("MinIO message not dead-lettered (%s); retrying", exc)
            await msg.nak(delay=self.backoff.base)
            return
        await msg.term()


async def watched_by_triggers(
    bus: Bus, owners: BucketOwners | None = None
) -> list[tuple[str, str]]:
    """(bucket, key prefix) of every enabled trigger with a bucket shortcut on a bucket of its
    own namespace (a trigger watching another's bucket never sees its events)."""
    from eventbus.triggers import TriggerStore  # the trigger model is heavy: load on first use

    owners = owners or BucketOwners(bus)
    return [
        (trigger.bucket, trigger.key_prefix or "")
        for trigger in await TriggerStore(bus).list()
        if trigger.enabled
        and trigger.bucket
        and await owners.owns(trigger.bucket, namespace_of(trigger.name))
    ]


class StorageReconciler:
    """Emits the created event of each watched object that the ledger shows no event for."""

    # Objects younger than min_age are left to MinIO's notification, still on its way.

    def __init__(
        self,
        bus: Bus,
        store: Storage,
        *,
        ledger: StorageLedger | None = None,
        owners: BucketOwners | None = None,
        watched: Watched | None = None,
        store_name: str = MINIO_STORE,
        interval: float = 300.0,
        min_age: float = 60.0,
    ) -> None:
        self.bus = bus
        self.store = store
        self.ledger = ledger if ledger is not None else StorageLedger(bus)
        self.owners = owners if owners is not None else BucketOwners(bus)
        self.watched = watched or (lambda: watched_by_triggers(bus, self.owners))
        self.store_name = store_name
        self.interval = interval
        self.min_age = timedelta(seconds=min_age)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Reconcile now and then every ``interval`` seconds."""
        self._task = asyncio.create_task(self._loop(), name="storage-reconciler")

    async def stop(self) -> None:
        """Stop the periodic passes."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                emitted = await self.reconcile()
                if emitted:
                    log.warning("reconciler emitted %d missed storage events", len(emitted))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("reconciliation failed: %s", exc)
            await asyncio.sleep(self.interval)

    async def reconcile(self) -> list[CloudEvent]:
        """One pass over the watched buckets; the events it emitted."""
        await self.ledger.ensure()
        prefixes: dict[str, set[str]] = {}
        for bucket, prefix in await self.watched():
            prefixes.setdefault(bucket, set()).add(prefix)
        emitted: list[CloudEvent] = []
        cutoff = datetime.now(UTC) - self.min_age
        for bucket, wanted in sorted(prefixes.items()):
            # a prefix that another one starts with is covered by it
            roots = sorted(p for p in wanted if not any(p != q and p.startswith(q) for q in wanted))
            for prefix in roots:
                try:
                    emitted += await self._reconcile_prefix(bucket, prefix, cutoff)
                except NoSuchBucketError:
                    log.debug("watched bucket %s does not exist", bucket)
                    break
        return emitted

    async def _reconcile_prefix(
        self, bucket: str, prefix: str, cutoff: datetime
    ) -> list[CloudEvent]:
        emitted = []
        start_after: str | None = None
        while True:
            page = await self.store.list(bucket, prefix=prefix, start_after=start_after)
            for summary in page.objects:
                if summary.last_modified <= cutoff and not await self._covered(summary):
                    event = await self._emit(summary)
                    if event is not None:
                        emitted.append(event)
            if not page.is_truncated or page.next_marker is None:
                return emitted
            start_after = page.next_marker

    async def _covered(self, summary: ObjectSummary) -> bool:
        last = await self.ledger.get(summary.bucket, summary.key)
        return (
            last is not None
            and last.etag == summary.etag
            and last.modified >= summary.last_modified - SAME_WRITE
        )

    async def _emit(self, summary: ObjectSummary) -> CloudEvent | None:
        try:
            info = await self.store.stat(summary.bucket, summary.key)
        except NoSuchKeyError:
            return None  # deleted since the listing
        if info.etag != summary.etag:
            return None  # overwritten since the listing: its own notification will come
        # the listing's time makes the id the same on every pass until the ledger has it
        context = RecordContext(event_source=RECONCILER_SOURCE)
        event = created_event(
            self.bus,
            self.store_name,
            info,
            summary.last_modified,
            namespace=await self.owners.owner(info.bucket),
            context=context,
        )
        await publish_event(self.bus, event)
        entry = LedgerEntry(
            info.bucket,
            info.key,
            info.etag,
            event.id,
            summary.last_modified,
            "reconciler",
            sequencer=time_ns(summary.last_modified),
        )
        await self.ledger.record(entry)
        return event
