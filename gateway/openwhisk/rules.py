"""OpenWhisk rules: trigger -> action. A rule is stored as a native trigger whose filter names
the OpenWhisk trigger, so it shows through `/v1/triggers` too (a fire is fanned out to the
rules by the gateway, `gateway.openwhisk.triggers`); `POST {"status": ...}` enables or
disables it. The action may be `name`, `pkg/name`, `/ns/name` or `/ns/pkg/name`."""

from __future__ import annotations

from typing import Annotated, Any

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
from gateway.openwhisk.refs import load_action, parse_ref, stored_ref
from gateway.openwhisk.types import RuleIn, RuleStatusIn

router = APIRouter(prefix=PREFIX + "/rules", tags=["openwhisk"])


async def _shown(request: Request, native: Trigger, ns: str, followed: str) -> dict[str, Any]:
    """The rule document, its action named as OpenWhisk names it (`path` = `ns/pkg` inside one)."""
    doc = shapes.rule(native, ns, local_name(followed))
    ref = await stored_ref(request, ns, native.function)
    doc["action"] = {"name": ref.name, "path": ref.namespace_path}
    return doc


async def _rule(request: Request, qname: str) -> tuple[Trigger, str]:
    native = await triggers(request).get(qname)
    followed = rule_trigger(native, fired_type(request))
    if followed is None:  # a native trigger of the same name, not a rule
        raise NotFoundError(f"rule {local_name(qname)!r} does not exist")
    return native, followed


@router.get("")
async def list_rules(
    request: Request,
    ns: str,
    limit: Annotated[int, Query(ge=0, le=200)] = 30,
    skip: Annotated[int, Query(ge=0)] = 0,
    count: str | None = None,
) -> Response:
    """The namespace's rules; `count=true`: `{"rules": N}`."""
    ns = resolve(request, ns)
    fired = fired_type(request)
    found = []
    for native in await triggers(request).list():
        followed = rule_trigger(native, fired)
        if followed is not None and belongs(native.name, ns):
            found.append(await _shown(request, native, ns, followed))
    if flag(count):
        return as_json({"rules": len(found)})
    return as_json(found[skip : skip + limit] if limit else found[skip:])


@router.put("/{name}")
async def put_rule(
    request: Request, ns: str, name: str, body: RuleIn, overwrite: str | None = None
) -> Response:
    """Create a rule (the trigger and the action must exist); 409 unless `?overwrite=true`."""
    ns = resolve(request, ns)
    qname = qualified(ns, name, "rule")
    trigger = qualified(ns, entity(body.trigger, ns, "trigger"), "trigger")
    if await ow_store(request).get("trigger", trigger) is None:
        raise NotFoundError(f"trigger {local_name(trigger)!r} does not exist")
    target = await parse_ref(request, ns, body.action)
    await load_action(request, target)  # 404 when absent
    action = target.qname
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
    return as_json(await _shown(request, stored, ns, trigger))


@router.get("/{name}")
async def get_rule(request: Request, ns: str, name: str) -> Response:
    """One rule."""
    ns = resolve(request, ns)
    native, followed = await _rule(request, qualified(ns, name, "rule"))
    return as_json(await _shown(request, native, ns, followed))


@router.post("/{name}")
async def set_rule_status(request: Request, ns: str, name: str, body: RuleStatusIn) -> Response:
    """Enable (`active`) or disable (`inactive`) a rule."""
    ns = resolve(request, ns)
    qname = qualified(ns, name, "rule")
    _, followed = await _rule(request, qname)
    native = await triggers(request).set_enabled(qname, body.status == "active")
    return as_json(await _shown(request, native, ns, followed))


@router.delete("/{name}")
async def delete_rule(request: Request, ns: str, name: str) -> Response:
    """Delete a rule; answers with what it was."""
    ns = resolve(request, ns)
    qname = qualified(ns, name, "rule")
    native, followed = await _rule(request, qname)
    await triggers(request).delete(qname)
    return as_json(await _shown(request, native, ns, followed))
