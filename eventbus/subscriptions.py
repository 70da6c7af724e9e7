"""Subscriptions (after the CloudEvents Subscriptions API) and their delivery state, in KV.

A subscription names a sink: an HTTP(S) webhook, or ``nats:<subject>`` on this bus. It
matches events by ``source`` (exact), ``types`` (any of) and ``filters`` (the Subscriptions
API filter dialects, see `eventbus.filters`); all three must match. A subscription belongs to a
namespace and gets only that namespace's events (the ``namespace`` attribute, none meaning
``default``). Its KV key is its id in ``default`` and ``<namespace>=<id>`` elsewhere, as
`eventbus.namespaces` qualifies names; ids never hold ``=``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from nats.js.errors import KeyNotFoundError
from nats.js.errors import NotFoundError as JsNotFoundError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from eventbus.connection import Bus
from eventbus.errors import ConflictError, NotFoundError, ValidationFailedError
from eventbus.filters import compile_filters, filters_might_match_prefix
from eventbus.kv import cas, read, write
from eventbus.kv import keys as kv_keys
from eventbus.namespaces import DEFAULT_NAMESPACE, NAME, SEPARATOR, event_namespace, is_name
from eventbus.streams import DELIVERIES_KV, SUBSCRIPTIONS_KV
from eventbus.subjects import ACTIVATION_ROOT, ALL_EVENTS, EVENT_SUBJECTS, PLATFORM_ROOTS
from eventbus.types import EVENTS_STREAM, CloudEvent, new_id

log = logging.getLogger(__name__)
SUBSCRIPTION_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
#: an id as stored: qualified by its namespace outside ``default``
SUBSCRIPTION_KEY_PATTERN: Final = rf"^({NAME}{SEPARATOR})?[A-Za-z0-9][A-Za-z0-9_-]{{0,63}}$"
NATS_SINK_SCHEME: Final = "nats:"
#: first subject tokens a NATS sink may not publish on: the platform's own streams and APIs
RESERVED_SUBJECT_ROOTS: Final = PLATFORM_ROOTS
#: outside ``default`` a NATS sink publishes only under ``ns.<namespace>.``: elsewhere it could
#: feed what the platform or a bridge listens to (MinIO's notification subject, for one)
NAMESPACE_SINK_ROOT: Final = "ns"
_HEADER_NAME: Final = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_SUBJECT_TOKEN: Final = re.compile(r"^[\x21-\x29\x2b-\x2d\x2f-\x3d\x3f-\x7e]+$")  # no . * >

ERROR_TEXT_LIMIT: Final = 500

Matcher = Callable[[CloudEvent], bool]


def subscription_key(namespace: str, subscription_id: str) -> str:
    """The KV key of a namespace's subscription ``subscription_id``."""
    if not is_name(namespace) or SEPARATOR in subscription_id:
        raise ValueError(f"not a valid namespace and id: {namespace!r}, {subscription_id!r}")
    if namespace == DEFAULT_NAMESPACE:
        return subscription_id
    return f"{namespace}{SEPARATOR}{subscription_id}"


def split_key(key: str) -> tuple[str, str]:
    """``(namespace, id)`` of a subscription's KV key."""
    namespace, sep, subscription_id = key.partition(SEPARATOR)
    return (namespace, subscription_id) if sep else (DEFAULT_NAMESPACE, key)


def consumer_name(subscription_id: str) -> str:
    """The durable consumer on EVENTS that feeds one subscription."""
    return f"sub-{subscription_id}"


def nats_sink_subject(sink: str) -> str:
    """The subject of a ``nats:<subject>`` sink, checked; `ValueError` names what is wrong."""
    subject = sink[len(NATS_SINK_SCHEME) :]
    tokens = subject.split(".")
    if not subject or not all(_SUBJECT_TOKEN.fullmatch(token) for token in tokens):
        raise ValueError(
            f"NATS sink subject {subject!r} must be dot-separated tokens of printable ASCII "
            "without spaces or wildcards"
        )
    if tokens[0] in RESERVED_SUBJECT_ROOTS or tokens[0].startswith("$"):
        raise ValueError(
            f"NATS sink subject {subject!r} is reserved by the platform "
            f"({', '.join(sorted(RESERVED_SUBJECT_ROOTS))}, $…): publishing there could loop"
        )
    return subject


def sink_problem(namespace: str, sink: str) -> str | None:
    """Why ``namespace`` may not use this sink, or None (the rule on NATS sinks outside default)."""
    if namespace == DEFAULT_NAMESPACE or not sink.startswith(NATS_SINK_SCHEME):
        return None
    subject, root = sink[len(NATS_SINK_SCHEME) :], f"{NAMESPACE_SINK_ROOT}.{namespace}."
    if subject.startswith(root) and len(subject) > len(root):
        return None
    return (
        f"NATS sink subject {subject!r} is outside the namespace's own subjects: a subscription "
        f"of namespace {namespace!r} publishes only under {root}…"
    )


class ProtocolSettings(BaseModel):
    """HTTP settings of the Subscriptions API: method and extra headers (also sent on NATS)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["POST", "PUT"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            lower = name.lower()
            if (
                not _HEADER_NAME.fullmatch(name)
                or lower.startswith("ce-")
                or lower == "content-type"
            ):
                raise ValueError(
                    f"header {name!r} is not a valid extra header (ce-* and Content-Type are "
                    "the event's own)"
                )
            if "\r" in text or "\n" in text:
                raise ValueError(f"header {name!r} has a line break in its value")
        return value


class DeliveryConfig(BaseModel):
    """How hard to try: tries before a dead letter, backoff (deliverer defaults if unset)."""

    model_config = ConfigDict(extra="forbid")

    max_tries: int = Field(default=5, ge=1, le=100)
    backoff_base_s: float | None = Field(default=None, ge=0, le=3600)
    backoff_max_s: float | None = Field(default=None, ge=0, le=86_400)
    timeout_s: float = Field(default=10.0, gt=0, le=300, description="per HTTP request")


class Subscription(BaseModel):
    """A sink and what it wants: the CloudEvents Subscriptions API resource, HTTP and NATS."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, pattern=SUBSCRIPTION_KEY_PATTERN)
    source: str | None = Field(default=None, min_length=1)
    types: list[str] = Field(default_factory=list)
    filters: list[dict[str, Any]] = Field(default_factory=list)
    sink: str = Field(min_length=1, max_length=2048)
    protocol: Literal["HTTP", "NATS"] | None = None
    protocolsettings: ProtocolSettings = Field(default_factory=ProtocolSettings)
    config: DeliveryConfig = Field(default_factory=DeliveryConfig)
    enabled: bool = True
    created: datetime | None = None
    updated: datetime | None = None

    @field_validator("types")
    @classmethod
    def _check_types(cls, value: list[str]) -> list[str]:
        if any(not t for t in value):
            raise ValueError("an event type in `types` is empty")
        return value

    @field_validator("filters")
    @classmethod
    def _check_filters(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        try:
            compile_filters(value)
        except ValidationFailedError as exc:
            raise ValueError(str(exc)) from exc
        return value

    @field_validator("sink")
    @classmethod
    def _check_sink(cls, value: str) -> str:
        if value.startswith(NATS_SINK_SCHEME):
            nats_sink_subject(value)
            return value
        url = urlsplit(value)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(
                f"sink {value!r} must be an http(s):// URL with a host, or nats:<subject>"
            )
        return value

    @model_validator(mode="after")
    def _set_protocol(self) -> Subscription:
        kind: Literal["HTTP", "NATS"] = "NATS" if self.sink.startswith(NATS_SINK_SCHEME) else "HTTP"
        if self.protocol not in (None, kind):
            raise ValueError(f"protocol {self.protocol} does not fit sink {self.sink!r} ({kind})")
        self.protocol = kind
        return self

    @property
    def key(self) -> str:
        """The KV key (set once stored: the id, qualified outside ``default``)."""
        if self.id is None:
            raise ValueError("the subscription has no id yet")
        return self.id

    @property
    def namespace(self) -> str:
        """The namespace the subscription belongs to (from its key; ``default`` before that)."""
        return split_key(self.id)[0] if self.id else DEFAULT_NAMESPACE

    def event_subjects(self, prefix: str) -> list[str]:
        """What its consumer on EVENTS reads: ``events.>``, and ``activation.>`` only if its
        types and filters admit one of the platform's activation events (most do not, and
        their consumers would be handed every completion)."""
        activation = f"{prefix}.{ACTIVATION_ROOT}."
        wanted = (
            not self.types or any(t.startswith(activation) for t in self.types)
        ) and filters_might_match_prefix(self.filters, activation)
        return list(EVENT_SUBJECTS) if wanted else [ALL_EVENTS]

    def matcher(self) -> Matcher:
        """A predicate for the events this subscription wants: its namespace's, filtered."""
        source, types, accept = self.source, frozenset(self.types), compile_filters(self.filters)
        namespace = self.namespace

        def matches(event: CloudEvent) -> bool:
            if event_namespace(event.extensions) != namespace:
                return False
            if source is not None and event.source != source:
                return False
            if types and event.type not in types:
                return False
            return accept(event)

        return matches


class DeliveryState(BaseModel):
    """What happened to a subscription's deliveries (counts since it was created)."""

    delivered: int = 0
    failed: int = 0
    dead_lettered: int = 0
    last_event_id: str | None = None
    last_attempt: datetime | None = None
    last_delivery: datetime | None = None
    last_error: str | None = None
    last_error_time: datetime | None = None


class SubscriptionStore:
    """Create, read, replace and delete subscriptions in the `subscriptions` KV bucket."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._state_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def get(self, subscription_id: str) -> Subscription:
        """One subscription, or `NotFoundError`."""
        found = await read(await self.bus.kv(SUBSCRIPTIONS_KV), subscription_id, Subscription)
        if found is None:
            raise _not_found(subscription_id)
        return found[0]

    async def list(self, namespace: str | None = None) -> list[Subscription]:
        """Every subscription (of one namespace, if given), oldest first."""
        kv = await self.bus.kv(SUBSCRIPTIONS_KV)
        keys = await kv_keys(kv)
        found: list[Subscription] = []
        for key in keys:
            if namespace is not None and split_key(key)[0] != namespace:
                continue
            with contextlib.suppress(NotFoundError):
                found.append(await self.get(key))
        return sorted(found, key=lambda s: (s.created or datetime.min.replace(tzinfo=UTC), s.key))

    async def create(
        self, subscription: Subscription, namespace: str = DEFAULT_NAMESPACE
    ) -> Subscription:
        """Store a new subscription of ``namespace`` (a fresh id unless it names one);
        `ConflictError` if taken."""
        key = subscription_key(namespace, subscription.id or new_id())
        stored, _ = await self._write(key, subscription, create_only=True)
        return stored

    async def put(
        self, subscription_id: str, subscription: Subscription
    ) -> tuple[Subscription, bool]:
        """Create or replace; ``(stored, created)``. The creation time is kept on replace."""
        if subscription.id not in (None, subscription_id):
            raise ValidationFailedError(
                f"the body names {subscription.id!r} but the path names {subscription_id!r}",
                field="id",
            )
        return await self._write(subscription_id, subscription, create_only=False)

    async def delete(self, subscription_id: str) -> None:
        """Delete a subscription, its consumer (stopping delivery) and its delivery state."""
        await self.get(subscription_id)
        kv = await self.bus.kv(SUBSCRIPTIONS_KV)
        await kv.delete(subscription_id)
        with contextlib.suppress(JsNotFoundError):
            await self.bus.js.delete_consumer(EVENTS_STREAM, consumer_name(subscription_id))
        state = await self.bus.kv(DELIVERIES_KV)
        with contextlib.suppress(KeyNotFoundError):
            await state.delete(subscription_id)

    async def delivery_state(self, subscription_id: str) -> DeliveryState:
        """The delivery counters (zeros before the first delivery)."""
        found = await read(await self.bus.kv(DELIVERIES_KV), subscription_id, DeliveryState)
        return found[0] if found else DeliveryState()

    async def delivery_states(self, ids: Sequence[str]) -> dict[str, DeliveryState]:
        """Delivery counters of several subscriptions at once."""
        states = await asyncio.gather(*(self.delivery_state(i) for i in ids))
        return dict(zip(ids, states, strict=True))

    async def record_attempt(
        self, subscription_id: str, event_id: str, *, ok: bool, error: str | None, dead: bool
    ) -> None:
        """Count one delivery attempt (compare-and-set; a notice, so failures are only logged)."""
        now = datetime.now(UTC)

        def count(found: DeliveryState | None) -> DeliveryState:
            state = found or DeliveryState()
            state.last_event_id, state.last_attempt = event_id, now
            if ok:
                state.delivered += 1
                state.last_delivery = now
            else:
                state.failed += 1
                state.dead_lettered += int(dead)
                state.last_error = (error or "failed")[:ERROR_TEXT_LIMIT]
                state.last_error_time = now
            return state

        try:
            kv = await self.bus.kv(DELIVERIES_KV)
            async with self._state_locks[subscription_id]:
                await cas(kv, subscription_id, DeliveryState, count)
        except Exception as exc:
            log.warning("subscription %s: delivery state not written: %s", subscription_id, exc)

    async def _write(
        self, subscription_id: str, subscription: Subscription, *, create_only: bool
    ) -> tuple[Subscription, bool]:
        kv = await self.bus.kv(SUBSCRIPTIONS_KV)
        now = datetime.now(UTC)
        found = await read(kv, subscription_id, Subscription)
        current, revision = found if found else (None, None)
        if current is not None and create_only:
            raise ConflictError(
                f"subscription {subscription_id!r} exists already", subscription=subscription_id
            )
        problem = sink_problem(split_key(subscription_id)[0], subscription.sink)
        if problem is not None:
            raise ValidationFailedError(problem, field="sink")
        stored = subscription.model_copy(
            update={
                "id": subscription_id,
                "created": current.created if current else now,
                "updated": now,
            }
        )
        value = stored.model_dump_json().encode()
        if await write(kv, subscription_id, value, last=revision) is None:
            raise ConflictError(
                f"subscription {subscription_id!r} changed concurrently; retry",
                subscription=subscription_id,
            )
        if current is not None:
            # A replacement that now wants activation events reads them from its answer on,
            # not from when its deliverer hears of it (the deliverer does it too, failing this)
            try:
                await sync_consumer_subjects(self.bus, stored)
            except Exception as exc:
                log.warning("subscription %s: consumer not updated here (%s)", stored.key, exc)
        return stored, current is None


def subject_filter(subjects: list[str]) -> dict[str, Any]:
    """The `ConsumerConfig` fields that make a consumer read ``subjects``."""
    if len(subjects) == 1:
        return {"filter_subject": subjects[0], "filter_subjects": None}
    return {"filter_subject": None, "filter_subjects": list(subjects)}


async def sync_consumer_subjects(bus: Bus, subscription: Subscription) -> bool:
    """Give the subscription's consumer the subjects it reads now (`Subscription.event_subjects`)
    if they changed; False if it has no consumer yet."""
    name = consumer_name(subscription.key)
    try:
        current = (await bus.js.consumer_info(EVENTS_STREAM, name)).config
    except JsNotFoundError:
        return False
    wanted = subscription.event_subjects(bus.prefix)
    if sorted(current.filter_subjects or [current.filter_subject or ""]) != sorted(wanted):
        # one of the fields an update may change: it applies to what is stored after it
        changed = dataclasses.replace(current, **subject_filter(wanted))
        await bus.js.add_consumer(EVENTS_STREAM, changed)
    return True


def _not_found(subscription_id: str) -> NotFoundError:
    return NotFoundError(
        f"subscription {subscription_id!r} does not exist", subscription=subscription_id
    )
