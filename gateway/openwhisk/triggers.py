"""OpenWhisk triggers: create (PUT), get, delete, list, and fire (POST).

A fire puts one `<prefix>.openwhisk.trigger.fired` event on the bus (subject: the trigger's
internal name; ``namespace``: the trigger's namespace); the rules (native triggers) on it invoke
their actions through the dispatcher, which matches only rules of that namespace.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, Response

from eventbus.errors import ConflictError, NotFoundError
from eventbus.namespaces import EVENT_ATTRIBUTE, belongs, local_name, namespace_of
from eventbus.publish import publish_event
from eventbus.types import CloudEvent, new_id
from gateway.openwhisk import shapes
from gateway.openwhisk.common import (
    ACTIVATION_HEADER,
    PREFIX,
    as_json,
    fired_type,
    flag,
    ow_store,
    qualified,
    resolve,
    rule_trigger,
    triggers,
)
from gateway.openwhisk.errors import BadRequestError
from gateway.openwhisk.types import TriggerIn
from gateway.state import state_of
from runtimes.types import ActivationRecord, ActivationStatus

router = APIRouter(prefix=PREFIX + "/triggers", tags=["openwhisk"])


async def _doc(request: Request, qname: str) -> dict[str, Any]:
    doc = await ow_store(request).get("trigger", qname)
    if doc is None:
        name = local_name(qname)
        raise NotFoundError(f"trigger {name!r} does not exist", trigger=name)
    return doc


async def _rules(request: Request, qname: str) -> dict[str, Any]:
    fired, ns = fired_type(request), namespace_of(qname)
    found = {}
    for native in await triggers(request).list():
        if rule_trigger(native, fired) == qname:
            found[f"{ns}/{local_name(native.name)}"] = {
                "action": {"name": local_name(native.function), "path": ns},
                "status": "active" if native.enabled else "inactive",
            }
    return found


@router.get("")
async def list_triggers(
    request: Request, ns: str, limit: Annotated[int, Query(ge=0, le=200)] = 30, skip: int = 0
) -> Response:
    """The namespace's triggers."""
    ns = resolve(request, ns)
    store = ow_store(request)
    names = [n for n in await store.names("trigger") if belongs(n, ns)]
    chosen = names[skip : skip + limit] if limit else names[skip:]
    return as_json([d for n in chosen if (d := await store.get("trigger", n)) is not None])


@router.put("/{name}")
async def put_trigger(
    request: Request, ns: str, name: str, body: TriggerIn, overwrite: str | None = None
) -> Response:
    """Create a trigger; update it with `?overwrite=true`, else 409."""
    ns = resolve(request, ns)
    qname = qualified(ns, name, "trigger")
    current = await ow_store(request).get("trigger", qname)
    if current is not None and not flag(overwrite):
        raise ConflictError(f"trigger {name!r} exists already (use ?overwrite=true)")
    version = (int(current["version"].rsplit(".", 1)[-1]) + 1) if current else 1
    doc = {
        "namespace": ns,
        "name": name,
        "version": shapes.semver(version),
        "parameters": [p.model_dump() for p in body.parameters],
        "annotations": [a.model_dump() for a in body.annotations],
        "limits": {},
        "publish": body.publish,
        "updated": shapes.ms(datetime.now(UTC)),
    }
    await ow_store(request).put("trigger", qname, doc)
    return as_json(doc)


@router.get("/{name}")
async def get_trigger(request: Request, ns: str, name: str) -> Response:
    """One trigger, with the rules on it."""
    qname = qualified(resolve(request, ns), name, "trigger")
    doc = await _doc(request, qname)
    return as_json({**doc, "rules": await _rules(request, qname)})


@router.delete("/{name}")
async def delete_trigger(request: Request, ns: str, name: str) -> Response:
    """Delete a trigger (its rules stay, and match nothing, as in OpenWhisk)."""
    qname = qualified(resolve(request, ns), name, "trigger")
    doc = await _doc(request, qname)
    await ow_store(request).delete("trigger", qname)
    return as_json(doc)


@router.post("/{name}")
async def fire_trigger(request: Request, ns: str, name: str) -> Response:
    """Fire: 202 `{activationId}` when an active rule follows the trigger, 204 when none."""
    ns = resolve(request, ns)
    qname = qualified(ns, name, "trigger")
    doc = await _doc(request, qname)
    raw = await request.body()
    try:
        payload = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"the payload is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise BadRequestError("the payload must be a JSON object")
    rules = {k: v for k, v in (await _rules(request, qname)).items() if v["status"] == "active"}
    if not rules:
        return Response(status_code=204)
    state = state_of(request)
    params = {p["key"]: p.get("value") for p in doc.get("parameters", [])} | payload
    now = datetime.now(UTC)
    event = CloudEvent(
        id=new_id(),
        source=f"/api/v1/namespaces/{ns}/triggers/{name}",
        type=fired_type(request),
        subject=qname,
        time=now,
        datacontenttype="application/json",
        data=orjson.dumps(params),
        extensions={EVENT_ATTRIBUTE: ns},
    )
    await publish_event(state.bus, event)
    record = ActivationRecord(
        id=event.id,
        function=qname,
        version=int(doc["version"].rsplit(".", 1)[-1]),
        status=ActivationStatus.SUCCESS,
        mode="trigger",
        start=now,
        end=now,
        duration_ms=0,
        result={"rules": sorted(rules)},
        cause=event.id,
    )
    await state.activations.put(record)
    return as_json({"activationId": event.id}, 202, {ACTIVATION_HEADER: event.id})
