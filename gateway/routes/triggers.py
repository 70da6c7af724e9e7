"""/v1/triggers: bind event filters to functions (create, read, update, delete, enable).

A trigger naming a function that does not exist is refused with 422 (the body refers to
something missing; the trigger itself is what the path names), as OpenWhisk refuses rules
naming missing actions. A function deleted later leaves its triggers in place: their matches
are reported as `trigger.skipped` events and dead letters of kind `dispatch`.

A trigger sees only its namespace's events. Its output bucket must be one the namespace may
write: its own, or a name nobody holds yet (claimed for the namespace here, as the first
output would create it); another namespace's bucket is refused with 403.

A trigger may carry a `schedule` (cron in a time zone, or an interval) beside or instead of
its filters; every answer with a scheduled trigger lists its next five fire times
(`next_fires`, UTC), from the clock the settings name.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from eventbus.errors import BucketTakenError, NotFoundError, ValidationFailedError
from eventbus.namespaces import NAMESPACE_PATTERN, belongs, is_name, local_name
from eventbus.scheduler import last_tick
from eventbus.schedules import Schedule, create_clock
from eventbus.triggers import OutputTarget, Trigger, TriggerStore, legacy_confinement
from gateway.auth.access import namespace, qualified
from gateway.auth.errors import ForbiddenError
from gateway.params import EVENT_FILTER_REF, FunctionFilter
from gateway.state import state_of

router = APIRouter(prefix="/v1/triggers", tags=["triggers"])
NamePath = Path(pattern=NAMESPACE_PATTERN, description="trigger name")


class TriggerOut(Trigger):
    """A trigger as answered: with its next fire times when it has a schedule."""

    next_fires: list[datetime] = Field(
        default_factory=list, description="the next five ticks of its schedule (UTC)"
    )
    last_tick: datetime | None = Field(
        default=None, description="the last tick of its schedule that was handled (UTC)"
    )


def local(trigger: Trigger, now: datetime | None = None) -> TriggerOut:
    """The trigger as its namespace sees it (bare names), with its next fire times."""
    schedule = trigger.schedule
    fires = schedule.upcoming(now) if schedule is not None and now is not None else []
    return TriggerOut.model_validate(
        {
            **trigger.model_dump(),
            "name": local_name(trigger.name),
            "function": local_name(trigger.function),
            "filters": trigger.own_filters(),
            "next_fires": fires,
        }
    )


def _now(request: Request) -> datetime:
    return create_clock(state_of(request).settings.schedule_clock).now()


async def _shown(request: Request, trigger: Trigger, now: datetime) -> TriggerOut:
    """`local` with the last tick handled, for a scheduled trigger."""
    shown = local(trigger, now)
    if trigger.schedule is not None and trigger.created is not None:
        shown.last_tick = await last_tick(state_of(request).bus, trigger.name, trigger.created)
    return shown


def _needs_a_match(schema: dict[str, Any]) -> None:
    """The schema says what `Trigger.parse` checks: filters or a storage shortcut."""
    schema["properties"]["filters"]["items"] = EVENT_FILTER_REF
    schema["anyOf"] = [
        {"required": ["filters"], "properties": {"filters": {"minItems": 1}}},
        {"required": ["schedule"], "properties": {"schedule": {"type": "object"}}},
        *(
            {"required": [field], "properties": {field: {"type": "string", "minLength": 1}}}
            for field in ("bucket", "key_prefix", "key_suffix")
        ),
        {"required": ["event_types"], "properties": {"event_types": {"minItems": 1}}},
    ]


class TriggerIn(BaseModel):
    """A trigger as sent by a client; filters are checked by the route, naming the bad part."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_needs_a_match)

    name: str | None = Field(
        default=None, pattern=NAMESPACE_PATTERN, description="taken from the path on PUT"
    )
    function: str = Field(pattern=NAMESPACE_PATTERN, description="the function it invokes")
    description: str = ""
    filters: list[dict[str, Any]] = Field(
        default_factory=list, description="CloudEvents Subscriptions API filters (implicit all)"
    )
    bucket: str | None = Field(default=None, min_length=1)
    key_prefix: str | None = Field(default=None, min_length=1)
    key_suffix: str | None = Field(default=None, min_length=1)
    event_types: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    schedule: Schedule | None = Field(default=None, description="fire by itself on a schedule")
    output: OutputTarget | None = None
    enabled: bool = Field(default=True, strict=True)
    # managed by the platform: accepted whatever they hold (a GET body can be sent back), ignored
    version: Any = Field(default=None, description="ignored (the platform's)")
    created: Any = Field(default=None, description="ignored (the platform's)")
    updated: Any = Field(default=None, description="ignored (the platform's)")
    activations_since: Any = Field(default=None, description="ignored (the platform's)")
    next_fires: Any = Field(default=None, description="ignored (computed)")
    last_tick: Any = Field(default=None, description="ignored (computed)")


class NewTrigger(TriggerIn):
    """A trigger to create (POST): the body names it."""

    name: str = Field(pattern=NAMESPACE_PATTERN, description="the trigger's name")


def _store(request: Request) -> TriggerStore:
    return TriggerStore(state_of(request).bus)


async def _trigger_from(request: Request, body: TriggerIn, name: str | None) -> Trigger:
    data = body.model_dump(
        exclude_unset=True,
        exclude={
            "version",
            "created",
            "updated",
            "activations_since",
            "next_fires",
            "last_tick",
        },
    )
    if name is not None:
        if data.get("name") not in (None, name):
            raise ValidationFailedError(
                f"the body names {data['name']!r} but the path names {name!r}", field="name"
            )
        data["name"] = name
    for field in ("name", "function"):
        if isinstance(data.get(field), str):
            if not is_name(data[field]):
                raise ValidationFailedError(
                    f"{field}: {data[field]!r} is not a valid name ([a-z0-9][a-z0-9_-]*)",
                    field=field,
                )
            data[field] = qualified(request, data[field])
    ns = namespace(request)
    if isinstance(data.get("filters"), list):  # sent back from a GET of an older trigger
        data["filters"] = [f for f in data["filters"] if f != legacy_confinement(ns)]
    trigger = Trigger.parse(data)
    try:
        await state_of(request).registry.get(trigger.function)
    except NotFoundError as exc:
        raise ValidationFailedError(
            f"function {local_name(trigger.function)!r} does not exist: "
            "create it before its triggers",
            field="function",
        ) from exc
    if trigger.output is not None:
        await _check_output(request, trigger.output.bucket, ns)
    return trigger


async def _check_output(request: Request, bucket: str, ns: str) -> None:
    """The output bucket is the namespace's own, or claimed for it now; else 403."""
    state = state_of(request)
    try:
        await state.buckets.ensure_writable(bucket, ns, state.storage)
    except BucketTakenError as exc:
        raise ForbiddenError(
            f"output bucket {bucket!r} belongs to another namespace: a trigger may write only "
            "buckets of its own namespace",
            field="output.bucket",
        ) from exc


@router.get("", response_model=list[TriggerOut])
async def list_triggers(request: Request, function: FunctionFilter = None) -> list[TriggerOut]:
    """Every trigger, sorted by name."""
    ns = namespace(request)
    found = await _store(request).list(function=qualified(request, function) if function else None)
    now = _now(request)
    return [await _shown(request, t, now) for t in found if belongs(t.name, ns)]


@router.post("", status_code=201, response_model=TriggerOut)
async def create_trigger(request: Request, body: NewTrigger, response: Response) -> TriggerOut:
    """Create a trigger; 409 when the name is taken, 422 for a bad filter or missing function."""
    now = _now(request)
    wanted = await _trigger_from(request, body, None)
    trigger = await _store(request).put(wanted, create_only=True, now=now)
    response.headers["location"] = f"/v1/triggers/{local_name(trigger.name)}"
    return await _shown(request, trigger, now)


@router.put(
    "/{name}",
    response_model=TriggerOut,
    responses={201: {"model": TriggerOut, "description": "created (it did not exist)"}},
)
async def put_trigger(
    request: Request, body: TriggerIn, response: Response, name: str = NamePath
) -> TriggerOut:
    """Create or replace a trigger; every update bumps its version (201 when new)."""
    now = _now(request)
    trigger = await _store(request).put(await _trigger_from(request, body, name), now=now)
    if trigger.version == 1:
        response.status_code = 201
    return await _shown(request, trigger, now)


@router.get("/{name}", response_model=TriggerOut)
async def get_trigger(request: Request, name: str = NamePath) -> TriggerOut:
    """One trigger."""
    return await _shown(request, await _store(request).get(qualified(request, name)), _now(request))


@router.delete("/{name}", status_code=204)
async def delete_trigger(request: Request, name: str = NamePath) -> Response:
    """Delete a trigger; events from now on no longer match it."""
    await _store(request).delete(qualified(request, name))
    return Response(status_code=204)


@router.post("/{name}/enable", response_model=TriggerOut)
async def enable_trigger(request: Request, name: str = NamePath) -> TriggerOut:
    """Let the trigger invoke its function again."""
    trigger = await _store(request).set_enabled(qualified(request, name), True)
    return await _shown(request, trigger, _now(request))


@router.post("/{name}/disable", response_model=TriggerOut)
async def disable_trigger(request: Request, name: str = NamePath) -> TriggerOut:
    """Stop invoking; matches are reported as `trigger.skipped` events instead (ticks pass)."""
    trigger = await _store(request).set_enabled(qualified(request, name), False)
    return await _shown(request, trigger, _now(request))
