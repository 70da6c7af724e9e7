"""The JetStream layout (streams, KV buckets, per-function consumers), declared idempotently.

Every stream and KV bucket of the platform is declared here, once, with its share of the bus's
disk budget and what happens at that limit: records and events lose their oldest entries
(DiscardOld); the invocation queue and the stores of definitions refuse new writes
(DiscardNew), which the gateway answers with 503. Replicas only ever go up: a process started
with a lower setting leaves a stream as it found it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from eventbus.errors import BusUnavailableError
from eventbus.stream_sync import (
    NO_PEERS,
    TRANSIENT,
    Usage,
    streams_usage,
    sync_bucket,
    sync_stream,
    wait_for_jetstream,
)
from eventbus.subjects import ALL_DEAD_LETTERS, ALL_INVOCATIONS, EVENT_SUBJECTS, invoke_subject
from eventbus.types import DLQ_STREAM, EVENTS_STREAM, INVOCATIONS_STREAM

log = logging.getLogger(__name__)

DAY = 86_400.0
FUNCTIONS_KV = "functions"
ACTIVATIONS_KV = "activations"
TRIGGERS_KV = "triggers"
SUBSCRIPTIONS_KV = "subscriptions"
DELIVERIES_KV = "deliveries"
CATALOG_KV = "catalog"
DEPLOYMENTS_KV = "deployments"
BUCKETS_KV = "buckets"
#: schedules: the last tick fired per trigger, and event schedules (`eventbus.scheduler`)
SCHEDULES_KV = "schedules"
#: leader leases of replicated services: who runs the controller (`runtimes.control.leader`)
LEASES_KV = "leases"
#: API keys (`gateway.auth.keys`)
AUTH_KV = "auth_keys"
#: OpenWhisk's action parameters and triggers (`gateway.openwhisk.store`)
OPENWHISK_KV = "openwhisk"
#: holds on running OpenWhisk sequences, by activation id (`gateway.openwhisk.sequences`)
SEQUENCES_KV = "sequence_holds"
#: OSCAR's services: their FDL and token, and the token index (`gateway.oscar.store`)
OSCAR_KV = "oscar"
#: the storage events emitted per object (`eventbus.storage_events.StorageLedger`)
LEDGER_KV = "storage_events"
#: the share of the free disk that the bus may fill when no budget is set (at first start)
DISK_SHARE = 0.5
#: seconds `ensure_layout` keeps trying through a cluster's leader elections
LAYOUT_TIMEOUT_S = 60.0
#: what `ensure_layout` tries again (a bad request only when it says "no peers yet")
RETRIED: tuple[type[Exception], ...] = (*TRANSIENT, BadRequestError)


@dataclass(frozen=True)
class Budgeted:
    """What every stream and bucket declares: its share of the budget, and what to do at it."""

    #: fraction of the bus's total budget
    share: float
    #: at the limit, drop the oldest (records, events) or refuse new writes (work, definitions)
    discard: DiscardPolicy


@dataclass(frozen=True)
class StreamSpec(Budgeted):
    """A stream of the layout."""

    name: str = ""
    subjects: tuple[str, ...] = ()
    retention: RetentionPolicy = RetentionPolicy.LIMITS
    #: the `Layout` field holding its age limit, or "" for none
    max_age_of: str = ""


@dataclass(frozen=True)
class BucketSpec(Budgeted):
    """A KV bucket of the layout."""

    bucket: str = ""
    history: int = 1
    #: the `Layout` field holding its entries' time to live, or "" for none
    ttl_of: str = ""
    direct: bool = False
    #: read by few roles (the gateway's API keys): declared by `ensure_layout(private=True)`
    private: bool = False


OLD, NEW = DiscardPolicy.OLD, DiscardPolicy.NEW
#: every stream: add a line here for a new one
STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec(0.28, OLD, EVENTS_STREAM, EVENT_SUBJECTS, RetentionPolicy.LIMITS, "events_max_age"),
    StreamSpec(0.15, NEW, INVOCATIONS_STREAM, (ALL_INVOCATIONS,), RetentionPolicy.WORK_QUEUE),
    StreamSpec(0.05, OLD, DLQ_STREAM, (ALL_DEAD_LETTERS,), RetentionPolicy.LIMITS, "dlq_max_age"),
)
#: every KV bucket: add a line here for a new one
BUCKETS: tuple[BucketSpec, ...] = (
    BucketSpec(0.01, NEW, FUNCTIONS_KV, history=10),
    BucketSpec(0.01, NEW, TRIGGERS_KV, history=5),
    BucketSpec(0.01, NEW, SUBSCRIPTIONS_KV, history=5),
    BucketSpec(0.02, NEW, CATALOG_KV, history=10),
    BucketSpec(0.01, NEW, DEPLOYMENTS_KV, history=10),
    BucketSpec(0.01, NEW, BUCKETS_KV, history=5),
    BucketSpec(0.01, NEW, SCHEDULES_KV, history=1),
    BucketSpec(0.01, NEW, LEASES_KV, history=1),
    BucketSpec(0.01, NEW, AUTH_KV, history=1, private=True),
    BucketSpec(0.01, NEW, OPENWHISK_KV, history=1, private=True),
    BucketSpec(0.01, NEW, SEQUENCES_KV, history=1, private=True),
    BucketSpec(0.01, NEW, OSCAR_KV, history=1, private=True),
    BucketSpec(0.05, NEW, LEDGER_KV, history=1, private=True),
    BucketSpec(0.05, OLD, DELIVERIES_KV, history=1, ttl_of="activations_ttl"),
    BucketSpec(0.25, OLD, ACTIVATIONS_KV, history=1, ttl_of="activations_ttl", direct=True),
)


@dataclass(frozen=True)
class Layout:
    """Retention, replicas and disk budgets of the platform's streams and buckets."""

    events_max_age: float = 7 * DAY
    dlq_max_age: float = 30 * DAY
    activations_ttl: float = 7 * DAY
    duplicate_window: float = 120.0
    #: replicas of every stream and bucket (a cluster: 3); never lowers an existing one
    replicas: int = 1
    #: bytes the whole layout may keep, shared out by `Budgeted.share`; applied to existing
    #: streams too. None: a share of ``disk_free`` when a stream is created (then kept)
    budget: int | None = None
    #: bytes by stream or bucket name, over the shares (applied to existing streams too)
    budgets: Mapping[str, int] = field(default_factory=dict)
    #: free bytes of the disk under the bus's store (None: unknown, no default budget)
    disk_free: int | None = None

    def max_bytes(self, name: str, share: float) -> tuple[int | None, bool]:
        """(the budget of one stream or bucket, whether it was set rather than derived)."""
        if name in self.budgets:
            return self.budgets[name], True
        if self.budget is not None:
            return max(1, int(self.budget * share)), True
        if self.disk_free is not None:
            return max(1, int(self.disk_free * DISK_SHARE * share)), False
        return None, False


def stream_names(*, private: bool = True) -> tuple[str, ...]:
    """The JetStream name of every stream of the layout (KV buckets as ``KV_<bucket>``),
    without the private buckets unless ``private``."""
    buckets = (f"KV_{b.bucket}" for b in BUCKETS if private or not b.private)
    return (*(s.name for s in STREAMS), *buckets)


def _stream_config(spec: StreamSpec, layout: Layout) -> StreamConfig:
    max_age = getattr(layout, spec.max_age_of) if spec.max_age_of else None
    return StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        retention=spec.retention,
        max_age=max_age,
        storage=StorageType.FILE,
        num_replicas=layout.replicas,
        duplicate_window=layout.duplicate_window,
        allow_direct=True,
        discard=spec.discard,
    )


def _bucket_config(spec: BucketSpec, layout: Layout) -> KeyValueConfig:
    return KeyValueConfig(
        bucket=spec.bucket,
        history=spec.history,
        ttl=getattr(layout, spec.ttl_of) if spec.ttl_of else None,
        replicas=layout.replicas,
        direct=spec.direct,
    )


async def ensure_layout(
    js: JetStreamContext, layout: Layout | None = None, *, private: bool = False
) -> None:
    """Create or update every stream and KV bucket (the private ones too with ``private``:
    the gateway's and the admin's); safe to run from every process at start."""
    layout = layout or Layout()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LAYOUT_TIMEOUT_S
    while True:
        try:
            await wait_for_jetstream(js)
            for spec in STREAMS:
                await _ensure_stream(js, spec, layout)
            for bucket in BUCKETS:
                if private or not bucket.private:
                    await _ensure_bucket(js, bucket, layout)
            return
        except RETRIED as exc:
            if isinstance(exc, BadRequestError) and exc.err_code != NO_PEERS:
                raise
            # a cluster electing leaders (a node just died or came back) answers late or
            # "unavailable" for a few seconds: a process starting then waits, it does not exit
            if loop.time() >= deadline:
                raise BusUnavailableError(f"the bus layout did not answer: {exc!r}") from exc
            log.warning("bus layout: %r; trying again", exc)
            await asyncio.sleep(0.5)


async def ensure_bucket(
    js: JetStreamContext, bucket: str, layout: Layout | None = None, *, name: str = ""
) -> None:
    """Create or update one KV bucket of the layout as `ensure_layout` would (its replicas and
    budget from ``layout``, else the replicas of the layout in place); ``name`` makes it under
    another name (a test's own ledger)."""
    for spec in BUCKETS:
        if spec.bucket == bucket:
            if name:
                spec = dataclasses.replace(spec, bucket=name)
            await _ensure_bucket(js, spec, layout or await _layout_in_place(js))
            return
    raise ValueError(f"{bucket!r} is not a bucket of the layout (eventbus.streams.BUCKETS)")


async def _layout_in_place(js: JetStreamContext) -> Layout:
    """A layout with the replicas of the bus's EVENTS stream (its process asked for them), for
    a bucket made by a process that was given none; the default if there is no stream yet."""
    try:
        info = await js.stream_info(EVENTS_STREAM)
    except NotFoundError:
        return Layout()
    return Layout(replicas=max(1, int(info.config.num_replicas or 1)))


async def bind_bucket(js: JetStreamContext, bucket: str, layout: Layout | None = None) -> KeyValue:
    """The layout's KV bucket ``bucket``, created as `ensure_layout` declares it (with
    ``layout``'s replicas, else those of the layout in place) if missing."""
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        await ensure_bucket(js, bucket, layout)
        return await js.key_value(bucket)


async def _ensure_stream(js: JetStreamContext, spec: StreamSpec, layout: Layout) -> None:
    config = _stream_config(spec, layout)
    await ensure_stream(js, config, layout, share=spec.share)


async def ensure_stream(
    js: JetStreamContext, wanted: StreamConfig, layout: Layout, *, share: float
) -> None:
    """Create or update one stream (``wanted`` names its discard policy) with the layout's
    replicas (never lowering them) and ``share`` of its budget; for streams declared outside
    this module (MinIO's notifications)."""
    budget, explicit = layout.max_bytes(str(wanted.name), share)
    await sync_stream(js, wanted, replicas=layout.replicas, budget=budget, explicit=explicit)


async def _ensure_bucket(js: JetStreamContext, spec: BucketSpec, layout: Layout) -> None:
    budget, explicit = layout.max_bytes(spec.bucket, spec.share)
    await sync_bucket(
        js,
        _bucket_config(spec, layout),
        discard=spec.discard,
        replicas=layout.replicas,
        budget=budget,
        explicit=explicit,
    )


async def usage(js: JetStreamContext, *, private: bool = True) -> list[Usage]:
    """Every stream of the layout that exists, with its bytes, messages and budget."""
    return await streams_usage(js, stream_names(private=private))


def consumer_name(function: str) -> str:
    """The durable consumer that a function's workers share."""
    return f"fn-{function}"


async def ensure_consumer(
    js: JetStreamContext, function: str, *, ack_wait: float, max_ack_pending: int = 1000
) -> None:
    """Create the function's durable pull consumer on INVOCATIONS if it does not exist."""
    name = consumer_name(function)
    config = ConsumerConfig(
        durable_name=name,
        filter_subject=invoke_subject(function),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait,
        max_deliver=-1,
        max_ack_pending=max_ack_pending,
    )
    # Look first: a worker may read its consumer but not create or replace it (the controller does).
    with contextlib.suppress(NotFoundError):
        current = (await js.consumer_info(INVOCATIONS_STREAM, name)).config
        same = (current.filter_subject, current.ack_wait, current.max_ack_pending)
        if same == (config.filter_subject, config.ack_wait, config.max_ack_pending):
            return
    try:
        await js.add_consumer(INVOCATIONS_STREAM, config)
    except BadRequestError:
        await js.delete_consumer(INVOCATIONS_STREAM, name)
        await js.add_consumer(INVOCATIONS_STREAM, config)


async def queue_depth(js: JetStreamContext, function: str) -> tuple[int, int]:
    """(waiting, in flight) invocations of a function, from its consumer; (0, 0) if none."""
    try:
        info = await js.consumer_info(INVOCATIONS_STREAM, consumer_name(function))
    except NotFoundError:
        return 0, 0
    return int(info.num_pending or 0), int(info.num_ack_pending or 0)


async def remove_function_queue(js: JetStreamContext, function: str) -> None:
    """Delete a function's consumer and purge its queued invocations."""
    with contextlib.suppress(NotFoundError):
        await js.delete_consumer(INVOCATIONS_STREAM, consumer_name(function))
    await js.purge_stream(INVOCATIONS_STREAM, subject=invoke_subject(function))
