"""/v1/triggers: bind event filters to functions (create, read, update, delete, enable).

A trigger naming a function that does not exist is refused with 422 (the body refers to
something missing; the trigger itself is what the path names), as OpenWhisk refuses rules
naming missing actions. A function deleted later leaves its triggers in place: their matches
are reported as `trigger.skipped` events and dead letters of kind `dispatch`.

A trigger sees only its namespace's events. Its output bucket must be one the namespace may
write: its own, or a name nobody holds yet (claimed for the namespace here, as the first
output would create it); another namespace's bucket is refused with 403.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from eventbus.errors import BucketTakenError, NotFoundError, ValidationFailedError
from eventbus.namespaces import NAMESPACE_PATTERN, belongs, is_name, local_name
from eventbus.triggers import OutputTarget, Trigger, TriggerStore, legacy_confinement
from gateway.auth.access import namespace, qualified
from gateway.auth.errors import ForbiddenError
from gateway.params import EVENT_FILTER_REF, FunctionFilter
from gateway.state import state_of

router = APIRouter(prefix="/v1/triggers", tags=["triggers"])
NamePath = Path(pattern=NAMESPACE_PATTERN, description="trigger name")


def local(trigger: Trigger) -> Trigger:
    """The trigger as its namespace sees it (bare names)."""
    return trigger.model_copy(
        update={
            "name": local_name(trigger.name),
            "function": local_name(trigger.function),
            "filters": trigger.own_filters(),
        }
    )


def _needs_a_match(schema: dict[str, Any]) -> None:
    """The schema says what `Trigger.parse` checks: filters or a storage shortcut."""
    schema["properties"]["filters"]["items"] = EVENT_FILTER_REF
    schema["anyOf"] = [
        {"required": ["filters"], "properties": {"filters": {"minItems": 1}}},
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
    output: OutputTarget | None = None
    enabled: bool = Field(default=True, strict=True)
    # managed by the platform: accepted whatever they hold (a GET body can be sent back), ignored
    version: Any = Field(default=None, description="ignored (the platform's)")
    created: Any = Field(default=None, description="ignored (the platform's)")
    updated: Any = Field(default=None, description="ignored (the platform's)")


class NewTrigger(TriggerIn):
    """A trigger to create (POST): the body names it."""

    name: str = Field(pattern=NAMESPACE_PATTERN, description="the trigger's name")


def _store(request: Request) -> TriggerStore:
    return TriggerStore(state_of(request).bus)


async def _trigger_from(request: Request, body: TriggerIn, name: str | None) -> Trigger:
    data = body.model_dump(exclude_unset=True, exclude={"version", "created", "updated"})
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


@router.get("", response_model=list[Trigger])
async def list_triggers(request: Request, function: FunctionFilter = None) -> list[Trigger]:
    """Every trigger, sorted by name."""
    ns = namespace(request)
    found = await _store(request).list(function=qualified(request, function) if function else None)
    return [local(t) for t in found if belongs(t.name, ns)]


@router.post("", status_code=201, response_model=Trigger)
async def create_trigger(request: Request, body: NewTrigger, response: Response) -> Trigger:
    """Create a trigger; 409 when the name is taken, 422 for a bad filter or missing function."""
    trigger = await _store(request).put(await _trigger_from(request, body, None), create_only=True)
    response.headers["location"] = f"/v1/triggers/{local_name(trigger.name)}"
    return local(trigger)


@router.put(
    "/{name}",
    response_model=Trigger,
    responses={201: {"model": Trigger, "description": "created (it did not exist)"}},
)
async def put_trigger(
    request: Request, body: TriggerIn, response: Response, name: str = NamePath
) -> Trigger:
    """Create or replace a trigger; every update bumps its version (201 when new)."""
    trigger = await _store(request).put(await _trigger_from(request, body, name))
    if trigger.version == 1:
        response.status_code = 201
    return local(trigger)


@router.get("/{name}", response_model=Trigger)
async def get_trigger(request: Request, name: str = NamePath) -> Trigger:
    """One trigger."""
    return local(await _store(request).get(qualified(request, name)))


@router.delete("/{name}", status_code=204)
async def delete_trigger(request: Request, name: str = NamePath) -> Response:
    """Delete a trigger; events from now on no longer match it."""
    await _store(request).delete(qualified(request, name))
    return Response(status_code=204)


@router.post("/{name}/enable", response_model=Trigger)
async def enable_trigger(request: Request, name: str = NamePath) -> Trigger:
    """Let the trigger invoke its function again."""
    return local(await _store(request).set_enabled(qualified(request, name), True))


@router.post("/{name}/disable", response_model=Trigger)
async def disable_trigger(request: Request, name: str = NamePath) -> Trigger:
    """Stop invoking; matches are reported as `trigger.skipped` events instead."""
    return local(await _store(request).set_enabled(qualified(request, name), False))
