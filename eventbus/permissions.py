"""What each platform role may publish and subscribe to on the bus (NATS user permissions).

Subjects are those of `eventbus.types` and `eventbus.streams`; the JetStream API subjects are
the ones nats-py sends for what a role does (stream info, KV get/put/watch, pull consumers,
acks). Each role subscribes only to its own inbox prefix (``_INBOX.<role>.>``), so no role
reads another's request replies; every role may publish into inboxes, to answer requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from eventbus.streams import (
    ACTIVATIONS_KV,
    BUCKETS,
    BUCKETS_KV,
    CATALOG_KV,
    DELIVERIES_KV,
    DEPLOYMENTS_KV,
    FUNCTIONS_KV,
    LEASES_KV,
    LEDGER_KV,
    SCHEDULES_KV,
    TRIGGERS_KV,
    stream_names,
)
from eventbus.subjects import (
    ALL_ACTIVATION_EVENTS,
    ALL_CONTROL,
    ALL_DEAD_LETTERS,
    ALL_EVENTS,
    ALL_INVOCATIONS,
    ALL_RUNS,
    CONTROL_METRICS,
    CONTROL_ROOT,
    CONTROL_RUNTIMES,
    CONTROL_STEM,
    DISPATCHER_STATS,
    INBOX_ROOT,
    control_subject,
    dlq_subject,
    events_subject,
    invoke_subject,
    legacy_activation_subject,
    run_subject,
)
from eventbus.types import DLQ_STREAM, EVENTS_STREAM, INVOCATIONS_STREAM

ADMIN: Final = "admin"
GATEWAY: Final = "gateway"
CONTROLLER: Final = "controller"
DISPATCHER: Final = "dispatcher"
DELIVERER: Final = "deliverer"
BRIDGE: Final = "bridge"
WORKER: Final = "worker"
PLATFORM_WORKER: Final = "platform-worker"
ROLES: Final = (
    ADMIN,
    GATEWAY,
    CONTROLLER,
    DISPATCHER,
    DELIVERER,
    BRIDGE,
    WORKER,
    PLATFORM_WORKER,
)

#: every stream and bucket that `ensure_layout` looks at (it only reads them when they exist)
_LAYOUT_STREAMS: Final = stream_names(private=False)


@dataclass(frozen=True)
class Permissions:
    """Allow (and deny) lists of one NATS user, as nats-server's config names them."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    publish_deny: tuple[str, ...] = field(default=())

    def config(self) -> dict[str, Any]:
        """The ``permissions`` block of an ``authorization.users`` entry."""
        publish: dict[str, Any] = {"allow": list(self.publish)}
        if self.publish_deny:
            publish["deny"] = list(self.publish_deny)
        return {"publish": publish, "subscribe": {"allow": list(self.subscribe)}}


def inbox_prefix(role: str) -> str:
    """The inbox prefix a role's connections use (and the only inboxes it may read)."""
    return INBOX_ROOT if role == ADMIN else f"{INBOX_ROOT}.{role}"


def kv_read(bucket: str) -> list[str]:
    """Bind, get (direct or not), watch and list keys of a KV bucket (a listing pulls from a
    consumer of its own: `eventbus.kv.keys`)."""
    stream = f"KV_{bucket}"
    return [
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.DELETE.{stream}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.>",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def kv_write(bucket: str, *, create: bool = False) -> list[str]:
    """Read, put and delete in a KV bucket (and create it, with ``create``)."""
    extra = [f"$JS.API.STREAM.CREATE.KV_{bucket}"] if create else []
    return [*kv_read(bucket), f"$KV.{bucket}.>", *extra]


def consume(stream: str, consumer: str = "*", *, create: bool = False) -> list[str]:
    """Pull from a durable consumer of a stream and acknowledge (and create it, with ``create``)."""
    subjects = [
        f"$JS.API.CONSUMER.INFO.{stream}.{consumer}",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
        f"$JS.ACK.{stream}.>",
    ]
    if create:
        subjects += [
            f"$JS.API.CONSUMER.CREATE.{stream}",
            f"$JS.API.CONSUMER.CREATE.{stream}.>",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.>",
            f"$JS.API.CONSUMER.DELETE.{stream}.>",
        ]
    return subjects


#: where activation events were published before they had a root of their own: still open
#: to the roles that publish them, so that a process of the previous version (an upgrade under
#: way) is not refused; such an event is stored under `events.>` and dispatched as it was
LEGACY_ACTIVATION_EVENTS: Final = (legacy_activation_subject(">"),)


def _base(role: str) -> tuple[list[str], list[str]]:
    publish = [
        f"{INBOX_ROOT}.>",
        "$JS.API.INFO",
        *(f"$JS.API.STREAM.INFO.{s}" for s in _LAYOUT_STREAMS),
    ]
    return publish, [f"{inbox_prefix(role)}.>"]


def _worker(role: str) -> tuple[list[str], list[str]]:
    publish, subscribe = _base(role)
    publish += [
        control_subject("ready"),
        control_subject("heartbeat"),
        control_subject("stopped"),
        CONTROL_STEM,
        ALL_ACTIVATION_EVENTS,
        *LEGACY_ACTIVATION_EVENTS,
        CONTROL_METRICS,  # counts of what it finished (`runtimes/tally.py`)
        # A trigger's output is announced by the worker that wrote it (`runtimes/worker/results.py`
        # `write_output`); every other storage event (deletes, MinIO notifications) stays out.
        events_subject("storage.object.created"),
        ALL_DEAD_LETTERS,
        *kv_read(FUNCTIONS_KV),
        *kv_read(BUCKETS_KV),
        *kv_write(ACTIVATIONS_KV),
        *consume(INVOCATIONS_STREAM),
    ]
    subscribe += [run_subject("*")]
    return publish, subscribe


def role_permissions(role: str) -> Permissions:
    """The permissions of one platform role (`ROLES`)."""
    if role == ADMIN:
        return Permissions(publish=(">",), subscribe=(">",))
    if role == WORKER:
        publish, subscribe = _worker(role)
        return Permissions(tuple(publish), tuple(subscribe))
    if role == PLATFORM_WORKER:
        # inference, retrain, rank, deploy: the catalog, calls to `rank`, and requests to the
        # control plane, which places deployments and keeps their records
        publish, subscribe = _worker(role)
        publish += [
            *kv_write(CATALOG_KV),
            events_subject("catalog.>"),
            run_subject("rank"),
            invoke_subject("rank"),
            control_subject("wake", "rank"),
            control_subject("deployments"),
        ]
        return Permissions(tuple(publish), tuple(subscribe))
    publish, subscribe = _base(role)
    if role == GATEWAY:
        # The front door does almost everything on behalf of authenticated callers; it never
        # serves functions or reads the control plane's announcements.
        publish += [
            ALL_EVENTS,
            ALL_ACTIVATION_EVENTS,  # a sequence's completion (`gateway/openwhisk/sequences.py`)
            CONTROL_METRICS,  # and its count (`runtimes/tally.py`)
            ALL_INVOCATIONS,
            ALL_RUNS,
            control_subject("wake"),
            control_subject("instances"),
            CONTROL_RUNTIMES,
            DISPATCHER_STATS,
            "$KV.>",
            "$JS.API.>",
            "$JS.ACK.>",
            "$JS.FC.>",
        ]
        subscribe += [ALL_EVENTS, ALL_ACTIVATION_EVENTS, CONTROL_METRICS]
    elif role == CONTROLLER:
        publish += [
            ALL_ACTIVATION_EVENTS,
            *LEGACY_ACTIVATION_EVENTS,
            CONTROL_METRICS,
            events_subject("runtime.>"),
            ALL_DEAD_LETTERS,
            *kv_read(FUNCTIONS_KV),
            *kv_write(ACTIVATIONS_KV),
            *kv_write(DEPLOYMENTS_KV),
            *kv_write(LEASES_KV),  # the leader lease (`runtimes.control.leader`)
            *consume(INVOCATIONS_STREAM, create=True),
            f"$JS.API.STREAM.PURGE.{INVOCATIONS_STREAM}",
        ]
        subscribe += [ALL_CONTROL]
    elif role == DISPATCHER:
        publish += [
            ALL_INVOCATIONS,
            control_subject("wake"),  # a trigger's function at zero gets a worker at once
            events_subject("trigger.>"),
            # ticks of OpenWhisk alarms, which the gateway fires (`gateway/openwhisk/alarms.py`)
            events_subject("openwhisk.alarm.tick"),
            ALL_DEAD_LETTERS,
            *kv_read(TRIGGERS_KV),
            *kv_read(FUNCTIONS_KV),
            *kv_read(LEDGER_KV),
            *kv_write(SCHEDULES_KV),
            *consume(EVENTS_STREAM, create=True),
        ]
        subscribe += [f"{CONTROL_ROOT}.dispatcher.>"]
    elif role == DELIVERER:
        # NATS sinks may name any subject outside the platform's roots (`subscriptions.py`)
        return Permissions(
            publish=(*publish, ">"),
            subscribe=tuple(subscribe),
            publish_deny=(
                ALL_EVENTS,
                ALL_ACTIVATION_EVENTS,
                ALL_INVOCATIONS,
                ALL_RUNS,
                ALL_CONTROL,
                "$JS.API.STREAM.CREATE.>",
                "$JS.API.STREAM.UPDATE.>",
                "$JS.API.STREAM.DELETE.>",
                "$JS.API.STREAM.PURGE.>",
                # every bucket but its own delivery counters
                *(f"$KV.{b.bucket}.>" for b in BUCKETS if b.bucket != DELIVERIES_KV),
            ),
        )
    elif role == BRIDGE:
        # MinIO's stream is named in the bridge's settings (`DEEPFAAS_STORAGE_BRIDGE_STREAM`,
        # default MINIO): any stream but the platform's own
        publish += [
            events_subject("storage.>"),
            # a MinIO message it cannot read is dead-lettered, not redelivered for ever
            dlq_subject("bridge", "*"),
            *kv_write(LEDGER_KV, create=True),
            *kv_read(BUCKETS_KV),
            "$JS.API.STREAM.CREATE.*",
            "$JS.API.STREAM.UPDATE.*",
            "$JS.API.STREAM.INFO.*",
            *consume("*", create=True),
        ]
        deny = [
            f"$JS.API.STREAM.{verb}.{stream}"
            for stream in stream_names()
            if stream != f"KV_{LEDGER_KV}"  # its own ledger, which it may create
            for verb in ("CREATE", "UPDATE")
        ]
        for stream in (EVENTS_STREAM, INVOCATIONS_STREAM, DLQ_STREAM):
            deny += [
                f"$JS.API.CONSUMER.CREATE.{stream}",
                f"$JS.API.CONSUMER.CREATE.{stream}.>",
                f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.>",
                f"$JS.API.CONSUMER.DELETE.{stream}.>",
                f"$JS.API.CONSUMER.MSG.NEXT.{stream}.>",
                f"$JS.ACK.{stream}.>",
            ]
        return Permissions(tuple(publish), tuple(subscribe), publish_deny=tuple(deny))
    else:
        raise ValueError(f"unknown bus role {role!r}; roles: {', '.join(ROLES)}")
    return Permissions(tuple(publish), tuple(subscribe))
