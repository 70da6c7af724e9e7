"""OpenWhisk triggers: create (PUT), get, delete, list, and fire (POST).

A fire is fanned out by the gateway, as OpenWhisk's controller does: each active rule on the
trigger (a native trigger whose filter names it) starts its action with the action's and its
package's parameters under the fire's payload (over the trigger's parameters); the trigger's
own activation record has the payload as result and one JSON line per rule in `logs`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, Response

from eventbus.errors import ConflictError, DeepfaasError, NotFoundError
from eventbus.namespaces import belongs, local_name, namespace_of, qualify
from eventbus.scheduler import delete_event_schedule
from eventbus.triggers import activation_id_for
from eventbus.types import new_id
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
from gateway.openwhisk.invoking import parameters, run_for_rule
from gateway.openwhisk.refs import stored_ref
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
                "function": native.function,
            }
    return found


@router.get("")
async def list_triggers(
    request: Request,
    ns: str,
    limit: Annotated[int, Query(ge=0, le=200)] = 30,
    skip: Annotated[int, Query(ge=0)] = 0,
    count: str | None = None,
) -> Response:
    """The namespace's triggers."""
    ns = resolve(request, ns)
    store = ow_store(request)
    names = [n for n in await store.names("trigger") if belongs(n, ns)]
    if flag(count):
        return as_json({"triggers": len(names)})
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
    ns = namespace_of(qname)
    rules = {}
    for path, rule in (await _rules(request, qname)).items():
        ref = await stored_ref(request, ns, rule["function"])
        action = {"name": ref.name, "path": ref.namespace_path}
        rules[path] = {"action": action, "status": rule["status"]}
    return as_json({**doc, "rules": rules})


@router.delete("/{name}")
async def delete_trigger(request: Request, ns: str, name: str) -> Response:
    """Delete a trigger (its rules stay, and match nothing, as in OpenWhisk; its alarm goes)."""
    qname = qualified(resolve(request, ns), name, "trigger")
    doc = await _doc(request, qname)
    await ow_store(request).delete("trigger", qname)
    await delete_event_schedule(state_of(request).bus, qname)
    return as_json(doc)


@router.post("/{name}")
async def fire_trigger(request: Request, ns: str, name: str) -> Response:
    """Fire: 202 `{activationId}` when an active rule follows the trigger, 204 when none.

    The gateway starts each rule's action itself (as OpenWhisk's controller does), under an
    activation id derived from the fire's and the rule's, so a repeated enqueue is one run.
    """
    ns = resolve(request, ns)
    qname = qualified(ns, name, "trigger")
    doc = await _doc(request, qname)
    payload = parameters(await request.body(), "payload")
    fire_id = new_id()
    if not await fire(request, qname, doc, payload, fire_id):
        return Response(status_code=204)
    return as_json({"activationId": fire_id}, 202, {ACTIVATION_HEADER: fire_id})


async def fire(
    request: Request, qname: str, doc: dict[str, Any], payload: dict[str, Any], fire_id: str
) -> bool:
    """Start the action of each active rule on the trigger (a manual fire or an alarm's tick)
    and record the trigger's activation ``fire_id``; False when no rule is active."""
    ns = namespace_of(qname)
    rules = {k: v for k, v in (await _rules(request, qname)).items() if v["status"] == "active"}
    if not rules:
        return False
    state = state_of(request)
    params = {p["key"]: p.get("value") for p in doc.get("parameters", [])} | payload
    start = datetime.now(UTC)
    logs = []
    for rule_path, rule in sorted(rules.items()):
        rule_qname = qualify(ns, rule_path.rsplit("/", 1)[-1])
        activation_id = activation_id_for(fire_id, rule_qname)
        line: dict[str, Any] = {"statusCode": 0, "success": True, "activationId": activation_id}
        line |= {"rule": rule_path, "action": f"{ns}/{rule['action']['name']}"}
        try:
            ref = await stored_ref(request, ns, rule["function"])
            line["action"] = f"{ref.namespace_path}/{ref.name}"
            await run_for_rule(request, ref, params, activation_id, fire_id)
        except DeepfaasError as exc:
            line = {**line, "statusCode": 1, "success": False, "error": exc.message}
            line.pop("activationId")
        logs.append(orjson.dumps(line).decode())
    end = datetime.now(UTC)
    record = ActivationRecord(
        id=fire_id,
        function=qname,
        version=int(doc["version"].rsplit(".", 1)[-1]),
        status=ActivationStatus.SUCCESS,
        mode="trigger",
        start=start,
        end=end,
        duration_ms=round((end - start).total_seconds() * 1000, 3),
        result=params,
        logs=logs,
    )
    await state.activations.put(record)
    return True
