"""OpenWhisk rules: trigger -> action. A rule is a native trigger on the trigger's fire events,
so it shows through `/v1/triggers` too; `POST {"status": ...}` enables or disables it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from eventbus.errors import ConflictError, NotFoundError
from eventbus.namespaces import belongs, local_name
from eventbus.triggers import Trigger
from gateway.openwhisk import shapes
from gateway.openwhisk.common import (
    PREFIX,
    as_json,
    entity,
    fired_type,
    flag,
    ow_store,
    qualified,
    resolve,
    rule_trigger,
    triggers,
)
from gateway.openwhisk.types import RuleIn, RuleStatusIn
from gateway.state import state_of

router = APIRouter(prefix=PREFIX + "/rules", tags=["openwhisk"])


async def _rule(request: Request, qname: str) -> tuple[Trigger, str]:
    native = await triggers(request).get(qname)
    followed = rule_trigger(native, fired_type(request))
    if followed is None:  # a native trigger of the same name, not a rule
        raise NotFoundError(f"rule {local_name(qname)!r} does not exist")
    return native, followed


@router.get("")
async def list_rules(
    request: Request, ns: str, limit: Annotated[int, Query(ge=0, le=200)] = 30, skip: int = 0
) -> Response:
    """The namespace's rules."""
    ns = resolve(request, ns)
    fired = fired_type(request)
    found = []
    for native in await triggers(request).list():
        followed = rule_trigger(native, fired)
        if followed is not None and belongs(native.name, ns):
            found.append(shapes.rule(native, ns, local_name(followed)))
    return as_json(found[skip : skip + limit] if limit else found[skip:])


@router.put("/{name}")
async def put_rule(
    request: Request, ns: str, name: str, body: RuleIn, overwrite: str | None = None
) -> Response:
    """Create a rule (the trigger and the action must exist); 409 unless `?overwrite=true`."""
    ns = resolve(request, ns)
    qname = qualified(ns, name, "rule")
    trigger = qualified(ns, entity(body.trigger, ns, "trigger"), "trigger")
    action = qualified(ns, entity(body.action, ns, "action"), "action")
    if await ow_store(request).get("trigger", trigger) is None:
        raise NotFoundError(f"trigger {local_name(trigger)!r} does not exist")
    await state_of(request).registry.get(action)
    store = triggers(request)
    try:
        await store.get(qname)
        exists = True
    except NotFoundError:
        exists = False
    if exists and not flag(overwrite):
        raise ConflictError(f"rule {name!r} exists already (use ?overwrite=true)")
    native = Trigger.parse(
        {
            "name": qname,
            "function": action,
            "description": f"OpenWhisk rule: trigger {local_name(trigger)} -> action",
            "event_types": [fired_type(request)],
            "filters": [{"exact": {"subject": trigger}}],
            "enabled": body.status != "inactive",
        }
    )
    stored = await store.put(native)
    return as_json(shapes.rule(stored, ns, local_name(trigger)))


@router.get("/{name}")
async def get_rule(request: Request, ns: str, name: str) -> Response:
    """One rule."""
    ns = resolve(request, ns)
    native, followed = await _rule(request, qualified(ns, name, "rule"))
    return as_json(shapes.rule(native, ns, local_name(followed)))


@router.post("/{name}")
async def set_rule_status(request: Request, ns: str, name: str, body: RuleStatusIn) -> Response:
    """Enable (`active`) or disable (`inactive`) a rule."""
    ns = resolve(request, ns)
    qname = qualified(ns, name, "rule")
    _, followed = await _rule(request, qname)
    native = await triggers(request).set_enabled(qname, body.status == "active")
    return as_json(shapes.rule(native, ns, local_name(followed)))


@router.delete("/{name}")
async def delete_rule(request: Request, ns: str, name: str) -> Response:
    """Delete a rule; answers with what it was."""
    ns = resolve(request, ns)
    qname = qualified(ns, name, "rule")
    native, followed = await _rule(request, qname)
    await triggers(request).delete(qname)
    return as_json(shapes.rule(native, ns, local_name(followed)))
