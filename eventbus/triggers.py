"""Triggers: an event filter bound to a function, with static parameters and an output target.

Stored as JSON in the `triggers` KV bucket, keyed by name; every update bumps the version.
A trigger sees only the events of its namespace (the dispatcher compares the event's
``namespace`` attribute with the namespace of the trigger's name).
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import string
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import unquote_plus

import orjson
from nats.js.errors import KeyNotFoundError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from eventbus.codec import to_structured_json
from eventbus.connection import Bus
from eventbus.errors import ConflictError, NotFoundError, ValidationFailedError
from eventbus.filters import (
    FilterList,
    compile_filters,
    filters_might_match_prefix,
    storage_filters,
)
from eventbus.invocations import new_invocation
from eventbus.kv import keys as kv_keys
from eventbus.kv import read, write
from eventbus.namespaces import (
    DEFAULT_NAMESPACE,
    QUALIFIED_NAME_PATTERN,
    SEPARATOR,
    namespace_of,
)
from eventbus.scheduler import FIRED_PREFIX
from eventbus.schedules import Schedule
from eventbus.streams import SCHEDULES_KV, TRIGGERS_KV
from eventbus.types import CloudEvent

#: internal names: ``<namespace>=<name>`` outside the default namespace (`eventbus.namespaces`)
TRIGGER_NAME_PATTERN: Final = QUALIFIED_NAME_PATTERN
FUNCTION_REF_PATTERN: Final = QUALIFIED_NAME_PATTERN
BUCKET_PATTERN: Final = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
#: what an output key template may use
TEMPLATE_FIELDS: Final = frozenset({"key", "stem", "ext", "bucket", "id", "trigger"})
#: the storage event type the shortcuts select when no `event_types` are given
DEFAULT_STORAGE_TYPE_SUFFIX: Final = "storage.object.created"


def check_key_template(template: str) -> str:
    """Return the template if it uses only ``{key}``-style fields from `TEMPLATE_FIELDS`."""
    if not template.strip():
        raise ValueError("the key template must not be empty")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"bad key template {template!r}: {exc}") from exc
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS or spec or conversion:
            allowed = ", ".join("{" + f + "}" for f in sorted(TEMPLATE_FIELDS))
            raise ValueError(f"key template field {{{name}}} is not one of {allowed}")
    return template


def render_key(template: str, *, key: str, bucket: str, event_id: str, trigger: str) -> str:
    """Render an output key: ``{stem}`` is the key less its extension, ``{ext}`` has the dot."""
    stem, ext = posixpath.splitext(key)
    return template.format(key=key, stem=stem, ext=ext, bucket=bucket, id=event_id, trigger=trigger)


class OutputTarget(BaseModel):
    """Where the function's result goes: a bucket and a key template (OSCAR's output storage)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bucket: str = Field(pattern=BUCKET_PATTERN, description="output bucket")
    key_template: str = Field(
        default="{key}",
        max_length=1024,
        description="fields: {key} {stem} {ext} {bucket} {id} {trigger}",
    )

    @field_validator("key_template")
    @classmethod
    def _template(cls, value: str) -> str:
        return check_key_template(value)


class Trigger(BaseModel):
    """A filter on events bound to a function; each match enqueues one invocation."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=TRIGGER_NAME_PATTERN, description="lower-case name, unique")
    function: str = Field(pattern=FUNCTION_REF_PATTERN, description="the function to invoke")
    description: str = ""
    filters: list[dict[str, Any]] = Field(
        default_factory=list,
        description="CloudEvents Subscriptions API filters (implicit `all`)",
    )
    bucket: str | None = Field(default=None, min_length=1, description="storage: bucket")
    key_prefix: str | None = Field(default=None, min_length=1, description="storage: key prefix")
    key_suffix: str | None = Field(default=None, min_length=1, description="storage: key suffix")
    event_types: list[str] = Field(
        default_factory=list,
        description="full event types; with storage shortcuts the default is object created",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="static parameters")
    schedule: Schedule | None = Field(
        default=None, description="fire by itself on a schedule (beside or instead of events)"
    )
    output: OutputTarget | None = None
    enabled: bool = True
    # managed by the platform
    version: int = Field(default=1, ge=1)
    created: datetime | None = None
    updated: datetime | None = None
    #: since when its filters have admitted the platform's activation events (this version's
    #: or an earlier one's): it fires for those stored from then on (`eventbus.dispatcher`)
    activations_since: datetime | None = None

    @field_validator("filters")
    @classmethod
    def _compile(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        try:
            compile_filters(value)
        except ValidationFailedError as exc:
            raise ValueError(exc.message) from exc
        return value

    @field_validator("params")
    @classmethod
    def _sendable(cls, value: dict[str, Any]) -> dict[str, Any]:
        # each fire writes them into an invocation: one that cannot be written would be
        # retried for ever (an integer past 64 bits, say)
        try:
            orjson.dumps(value)
        except orjson.JSONEncodeError as exc:
            raise ValueError(f"params cannot be sent on: {exc}") from exc
        return value

    @field_validator("event_types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        if any(not t for t in value):
            raise ValueError("event types must be non-empty strings")
        return value

    @model_validator(mode="after")
    def _something_to_match(self) -> Trigger:
        if not (self.matches_events or self.schedule):
            raise ValueError(
                "a trigger needs filters, a storage shortcut (bucket, key_prefix, key_suffix, "
                "event_types) or a schedule"
            )
        return self

    @property
    def matches_events(self) -> bool:
        """Whether events can fire it (filters or shortcuts), not only its schedule."""
        return bool(self.filters or self.has_storage_shortcut or self.event_types)

    @property
    def has_storage_shortcut(self) -> bool:
        """Whether bucket, key prefix or key suffix is set."""
        return bool(self.bucket or self.key_prefix or self.key_suffix)

    def effective_filters(self, prefix: str) -> FilterList:
        """The filters plus those of the shortcuts, for an event type prefix."""
        types = self.event_types
        if not types and self.has_storage_shortcut:
            types = [f"{prefix}.{DEFAULT_STORAGE_TYPE_SUFFIX}"]
        shortcuts = storage_filters(
            bucket=self.bucket,
            key_prefix=self.key_prefix,
            key_suffix=self.key_suffix,
            event_types=types,
        )
        return [*self.own_filters(), *shortcuts]

    def admits_types_under(self, prefix: str, type_prefix: str) -> bool:
        """Whether events of a type under ``type_prefix`` could fire it (``prefix``: the
        platform's event type prefix, for the storage shortcuts' default type)."""
        return self.matches_events and filters_might_match_prefix(
            self.effective_filters(prefix), type_prefix
        )

    def own_filters(self) -> FilterList:
        """The filters less the subject confinement that triggers outside ``default`` got before
        events carried their namespace (it would now hide the namespace's storage events)."""
        namespace = namespace_of(self.name)
        if namespace == DEFAULT_NAMESPACE:
            return list(self.filters)
        legacy = legacy_confinement(namespace)
        return [f for f in self.filters if f != legacy]

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Trigger:
        """Validate outside input; `ValidationFailedError` names the failing part."""
        filters = data.get("filters")
        if filters is not None:
            compile_filters(filters)  # raises with the path of the bad filter
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            errors = orjson.loads(exc.json(include_url=False))
            detail = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in errors
            )
            raise ValidationFailedError(f"invalid trigger: {detail}", errors=errors) from exc


def legacy_confinement(namespace: str) -> dict[str, Any]:
    """The filter that once confined a trigger of ``namespace`` to subjects ``<namespace>=…``."""
    return {"prefix": {"subject": f"{namespace}{SEPARATOR}"}}


def activation_id_for(event_id: str, trigger: str) -> str:
    """The activation id of one (event, trigger): 32 hex digits of a SHA-256."""
    return hashlib.sha256(f"{event_id}\0{trigger}".encode()).hexdigest()[:32]


def storage_object(event: CloudEvent) -> dict[str, Any] | None:
    """``{bucket, key, size, etag, content_type}`` of a storage event, else ``None``."""
    bucket = event.extensions.get("bucket")
    record: dict[str, Any] = {}
    with contextlib.suppress(orjson.JSONDecodeError, UnicodeDecodeError):
        data = event.json_data() if event.data else None
        if isinstance(data, dict) and isinstance(data.get("Records"), list) and data["Records"]:
            data = data["Records"][0]
        if isinstance(data, dict) and isinstance(data.get("s3"), dict):
            record = data["s3"]
    s3_bucket = _dict_at(record, "bucket")
    s3_object = _dict_at(record, "object")
    name = str(bucket) if bucket is not None else s3_bucket.get("name")
    key = event.subject if bucket is not None and event.subject else None
    if key is None and isinstance(s3_object.get("key"), str):
        key = unquote_plus(s3_object["key"])  # records carry the key query-escaped
    if not isinstance(name, str) or not key:
        return None
    etag = s3_object.get("eTag")
    return {
        "bucket": name,
        "key": key,
        "size": s3_object.get("size"),
        "etag": etag.strip('"') if isinstance(etag, str) else None,
        "content_type": s3_object.get("contentType"),
    }


def _dict_at(doc: dict[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name)
    return value if isinstance(value, dict) else {}


def invocation_for(
    bus: Bus,
    event: CloudEvent,
    trigger: Trigger,
    *,
    event_json: bytes | None = None,
    obj: dict[str, Any] | None = None,
) -> CloudEvent:
    """The invocation a trigger makes of an event: params, the event, the object, the target."""
    body: dict[str, Any] = dict(trigger.params)
    if obj is not None:
        body["object"] = obj
    else:
        # As OpenWhisk merges a trigger's payload into its parameters, a JSON-object payload's
        # fields are handed over at the top level (over the static params); storage events
        # carry an `object` instead.
        data = _json_object(event)
        if data:
            body.update(data)
    body["event"] = orjson.Fragment(event_json or to_structured_json(event))
    extra = {"trigger": trigger.name}
    if trigger.output is not None:
        extra["outbucket"] = trigger.output.bucket
        extra["outkey"] = render_key(
            trigger.output.key_template,
            key=obj["key"] if obj else event.subject or "",
            bucket=obj["bucket"] if obj else "",
            event_id=event.id,
            trigger=trigger.name,
        )
    return new_invocation(
        bus,
        trigger.function,
        orjson.dumps(body),
        source=f"/triggers/{trigger.name}",
        activation_id=activation_id_for(event.id, trigger.name),
        mode="async",
        cause=event.id,
        extra=extra,
    )


def _json_object(event: CloudEvent) -> dict[str, Any] | None:
    if not event.data or (event.datacontenttype and "json" not in event.datacontenttype):
        return None
    try:
        value = orjson.loads(event.data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


class TriggerStore:
    """Create, read, update and delete triggers in the `triggers` KV bucket."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def get(self, name: str) -> Trigger:
        """The trigger, or `NotFoundError`."""
        trigger, _ = await self._read(name)
        if trigger is None:
            raise NotFoundError(f"trigger {name!r} does not exist", trigger=name)
        return trigger

    async def list(self, *, function: str | None = None) -> list[Trigger]:
        """Every trigger (of one function, if given), sorted by name."""
        kv = await self.bus.kv(TRIGGERS_KV)
        keys = await kv_keys(kv)
        found = []
        for key in sorted(keys):
            trigger, _ = await self._read(key)
            if trigger is not None and (function is None or trigger.function == function):
                found.append(trigger)
        return found

    async def put(
        self, trigger: Trigger, *, create_only: bool = False, now: datetime | None = None
    ) -> Trigger:
        """Create, or replace with the version bumped; `ConflictError` on a concurrent change.

        ``now`` is the time to stamp (the schedulers' clock: a schedule counts from it)."""
        current, revision = await self._read(trigger.name)
        if current is not None and create_only:
            raise ConflictError(f"trigger {trigger.name!r} exists already", trigger=trigger.name)
        now = now or datetime.now(UTC)
        stored = trigger.model_copy(
            update={
                "version": current.version + 1 if current else 1,
                "created": current.created if current else now,
                "updated": now,
                "activations_since": self._activations_since(trigger, current),
            }
        )
        await self._write(stored, revision)
        return stored

    def _activations_since(self, trigger: Trigger, current: Trigger | None) -> datetime | None:
        """Kept while the filters go on admitting activation events; now (this machine's
        clock, which the bus's stored times are compared with, not the schedules' clock)
        when they begin to; None when they do not (or did before it was recorded)."""
        prefix, activation = self.bus.prefix, self.bus.event_type("activation.")
        if not trigger.admits_types_under(prefix, activation):
            return None
        if current is not None and current.admits_types_under(prefix, activation):
            return current.activations_since
        return datetime.now(UTC)

    async def set_enabled(self, name: str, enabled: bool) -> Trigger:
        """Enable or disable a trigger (an update: the version is bumped)."""
        current, revision = await self._read(name)
        if current is None:
            raise NotFoundError(f"trigger {name!r} does not exist", trigger=name)
        stored = current.model_copy(
            update={
                "enabled": enabled,
                "version": current.version + 1,
                "updated": datetime.now(UTC),
            }
        )
        await self._write(stored, revision)
        return stored

    async def delete(self, name: str) -> None:
        """Delete the trigger (and its schedule's record); `NotFoundError` when absent."""
        trigger = await self.get(name)
        kv = await self.bus.kv(TRIGGERS_KV)
        await kv.delete(name)
        if trigger.schedule is not None:
            with contextlib.suppress(KeyNotFoundError):
                await (await self.bus.kv(SCHEDULES_KV)).delete(FIRED_PREFIX + name)

    async def _read(self, name: str) -> tuple[Trigger | None, int | None]:
        found = await read(await self.bus.kv(TRIGGERS_KV), name, Trigger)
        return found if found else (None, None)

    async def _write(self, trigger: Trigger, revision: int | None) -> None:
        kv = await self.bus.kv(TRIGGERS_KV)
        value = trigger.model_dump_json().encode()
        if await write(kv, trigger.name, value, last=revision) is None:
            raise ConflictError(
                f"trigger {trigger.name!r} changed concurrently; retry", trigger=trigger.name
            )
