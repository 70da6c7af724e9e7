"""The JetStream layout (streams, KV buckets, per-function consumers), declared idempotently."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError

from eventbus.types import DLQ_STREAM, EVENTS_STREAM, INVOCATIONS_STREAM, invoke_subject

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


@dataclass(frozen=True)
class Layout:
    """Retention and limits of the platform's streams and buckets."""

    events_max_age: float = 7 * DAY
    dlq_max_age: float = 30 * DAY
    activations_ttl: float = 7 * DAY
    duplicate_window: float = 120.0
    replicas: int = 1


def _streams(layout: Layout) -> list[StreamConfig]:
    def stream(
        name: str, subject: str, retention: RetentionPolicy, max_age: float | None
    ) -> StreamConfig:
        return StreamConfig(
            name=name,
            subjects=[subject],
            retention=retention,
            max_age=max_age,
            storage=StorageType.FILE,
            num_replicas=layout.replicas,
            duplicate_window=layout.duplicate_window,
            allow_direct=True,
        )

    return [
        stream(EVENTS_STREAM, "events.>", RetentionPolicy.LIMITS, layout.events_max_age),
        stream(INVOCATIONS_STREAM, "invoke.>", RetentionPolicy.WORK_QUEUE, None),
        stream(DLQ_STREAM, "dlq.>", RetentionPolicy.LIMITS, layout.dlq_max_age),
    ]


async def ensure_layout(js: JetStreamContext, layout: Layout | None = None) -> None:
    """Create or update every stream and KV bucket; safe to run from every process at start."""
    layout = layout or Layout()
    for config in _streams(layout):
        # Look first: a role that may not create or change streams (a worker) only reads them.
        try:
            current = (await js.stream_info(str(config.name))).config
        except NotFoundError:
            try:
                await js.add_stream(config)
            except BadRequestError:
                await js.update_stream(config)
            continue
        if _differs(current, config):
            await js.update_stream(config)
    buckets = [
        KeyValueConfig(bucket=FUNCTIONS_KV, history=10, replicas=layout.replicas),
        KeyValueConfig(bucket=TRIGGERS_KV, history=5, replicas=layout.replicas),
        KeyValueConfig(bucket=SUBSCRIPTIONS_KV, history=5, replicas=layout.replicas),
        KeyValueConfig(bucket=CATALOG_KV, history=10, replicas=layout.replicas),
        KeyValueConfig(bucket=DEPLOYMENTS_KV, history=10, replicas=layout.replicas),
        KeyValueConfig(bucket=BUCKETS_KV, history=5, replicas=layout.replicas),
        KeyValueConfig(bucket=SCHEDULES_KV, history=1, replicas=layout.replicas),
        KeyValueConfig(
            bucket=DELIVERIES_KV, history=1, ttl=layout.activations_ttl, replicas=layout.replicas
        ),
        KeyValueConfig(
            bucket=ACTIVATIONS_KV,
            history=1,
            ttl=layout.activations_ttl,
            replicas=layout.replicas,
            direct=True,
        ),
    ]
    for kv_config in buckets:
        try:
            await js.key_value(kv_config.bucket)
        except BucketNotFoundError:
            await js.create_key_value(kv_config)


def _differs(current: StreamConfig, wanted: StreamConfig) -> bool:
    def key(c: StreamConfig) -> tuple[object, ...]:
        retention = getattr(c.retention, "value", c.retention)
        return (c.subjects, retention, c.max_age or 0.0, c.duplicate_window, c.allow_direct)

    return key(current) != key(wanted)


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
