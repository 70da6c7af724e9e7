"""Triggers (create from a form) and subscriptions (create from a form, delivery state)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Request, Response

from eventbus.namespaces import NAMESPACE_PATTERN
from eventbus.subscriptions import Subscription
from gateway.console.render import FRAGMENTS, FragmentRoute, fragment, json_field
from gateway.routes import functions as functions_api
from gateway.routes import subscriptions as subscriptions_api
from gateway.routes import triggers as api

router = APIRouter(prefix=FRAGMENTS, route_class=FragmentRoute, include_in_schema=False)
Name = Annotated[str, Path(pattern=NAMESPACE_PATTERN, max_length=63)]
Text = Annotated[str, Form(max_length=1024)]


@router.get("/triggers")
async def list_triggers(request: Request) -> Response:
    """The namespace's triggers, and a form to make one (its functions to choose from)."""
    return fragment(
        request,
        "triggers_list.html",
        triggers=await api.list_triggers(request),
        functions=[f.name for f in await functions_api.list_functions(request)],
    )


@router.post("/triggers")
async def create_trigger(
    request: Request,
    name: Annotated[str, Form(pattern=NAMESPACE_PATTERN, max_length=63)],
    function: Annotated[str, Form(pattern=NAMESPACE_PATTERN, max_length=63)],
    bucket: Text = "",
    key_prefix: Text = "",
    key_suffix: Text = "",
    event_types: Text = "",
    params: Annotated[str, Form(max_length=10_000)] = "",
    output_bucket: Text = "",
    output_key: Text = "",
    cron: Annotated[str, Form(max_length=200)] = "",
    timezone: Annotated[str, Form(max_length=64)] = "",
    interval_s: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    """Create a trigger from the form: a storage match and/or event types, or a schedule
    (cron in a time zone, or an interval); params; an output."""
    data: dict[str, Any] = {"name": name, "function": function}
    matches = {"bucket": bucket, "key_prefix": key_prefix, "key_suffix": key_suffix}
    for field, value in matches.items():
        if value.strip():
            data[field] = value.strip()
    types = [t.strip() for t in event_types.split(",") if t.strip()]
    if types:
        data["event_types"] = types
    parsed = json_field(params, "params")
    if parsed is not None:
        data["params"] = parsed
    if output_bucket.strip():
        data["output"] = {"bucket": output_bucket.strip()}
        if output_key.strip():
            data["output"]["key_template"] = output_key.strip()
    schedule: dict[str, Any] = {}
    if cron.strip():
        schedule = {"cron": cron.strip(), "timezone": timezone.strip() or "UTC"}
    if interval_s.strip():
        schedule["interval_s"] = interval_s.strip()
    if schedule:
        data["schedule"] = schedule
    await api.create_trigger(request, api.NewTrigger.model_validate(data), Response())
    return await list_triggers(request)


@router.post("/triggers/{name}/{action}")
async def switch_trigger(request: Request, name: Name, action: str) -> Response:
    """Enable or disable a trigger."""
    if action == "enable":
        await api.enable_trigger(request, name)
    elif action == "disable":
        await api.disable_trigger(request, name)
    else:
        return fragment(request, "error.html", status_code=404, message=f"no action {action!r}")
    return await list_triggers(request)


@router.delete("/triggers/{name}")
async def delete_trigger(request: Request, name: Name) -> Response:
    """Delete a trigger."""
    await api.delete_trigger(request, name)
    return await list_triggers(request)


@router.get("/subscriptions")
async def list_subscriptions(request: Request) -> Response:
    """The namespace's subscriptions with their delivery state."""
    found = await subscriptions_api.list_subscriptions(request)
    return fragment(request, "subscriptions_list.html", subscriptions=found)


@router.post("/subscriptions")
async def create_subscription(
    request: Request,
    sink: Annotated[str, Form(min_length=1, max_length=2048)],
    types: Text = "",
    source: Text = "",
) -> Response:
    """Register a sink (an http(s) URL, or `nats:` subject) for event types and a source."""
    body: dict[str, Any] = {"sink": sink.strip()}
    wanted = [t.strip() for t in types.split(",") if t.strip()]
    if wanted:
        body["types"] = wanted
    if source.strip():
        body["source"] = source.strip()
    await subscriptions_api.create_subscription(
        request, Subscription.model_validate(body), Response()
    )
    return await list_subscriptions(request)
