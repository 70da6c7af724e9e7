"""OpenWhisk actions: create/update (PUT), get, delete, list, and invoke (POST).

An action is a native function: the same object shows through `/v1/functions`.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, Response
from pydantic import ValidationError

from eventbus.errors import ConflictError, NotFoundError
from eventbus.namespaces import belongs
from gateway.auth.settings import AuthSettings
from gateway.openwhisk import shapes
from gateway.openwhisk.common import (
    ACTIVATION_HEADER,
    PREFIX,
    as_json,
    flag,
    ow_store,
    qualified,
    resolve,
)
from gateway.openwhisk.errors import BadRequestError, TooLargeError
from gateway.openwhisk.types import SUPPORTED_KINDS, ActionIn
from gateway.state import state_of
from runtimes.loader import check_syntax
from runtimes.types import MAX_CODE_BYTES, ActivationStatus, FunctionSpec

router = APIRouter(prefix=PREFIX + "/actions", tags=["openwhisk"])
_MANAGED = {"version", "created", "updated"}


def _spec(body: ActionIn, qname: str, current: FunctionSpec | None, bounds: AuthSettings) -> Any:
    data: dict[str, Any] = current.model_dump(exclude=_MANAGED) if current else {"name": qname}
    if body.exec is None and current is None:
        raise BadRequestError("exec is required: {kind: python:3, code: ...}")
    if body.exec is not None:
        kind = body.exec.kind
        if kind not in SUPPORTED_KINDS:
            raise BadRequestError(
                f"exec.kind {kind!r} is not supported; supported kinds: "
                + ", ".join(SUPPORTED_KINDS)
            )
        if body.exec.binary:
            raise BadRequestError("binary (zip) actions are not supported: send inline `code`")
        if body.exec.code is None and not (body.exec.main and ":" in body.exec.main):
            raise BadRequestError("exec.code is required (Python defining `main(args)`)")
        if body.exec.code is not None and len(body.exec.code.encode()) > MAX_CODE_BYTES:
            raise TooLargeError(f"the code is over the {MAX_CODE_BYTES}-byte limit")
        data.update(code=body.exec.code, handler=body.exec.main or "main")
    limits = body.limits
    if limits.timeout is not None:
        low, high = int(bounds.action_timeout_min_s * 1000), int(bounds.action_timeout_max_s * 1000)
        if not low <= limits.timeout <= high:
            raise BadRequestError(f"limits.timeout {limits.timeout} ms is outside {low}..{high} ms")
        data["timeout_s"] = limits.timeout / 1000
    if limits.memory is not None:
        if not 64 <= limits.memory <= 262_144:
            raise BadRequestError(f"limits.memory {limits.memory} MB is outside 64..262144 MB")
        data["memory_mb"] = limits.memory
    if limits.concurrency is not None:
        if not 1 <= limits.concurrency <= 1000:
            raise BadRequestError(f"limits.concurrency {limits.concurrency} is outside 1..1000")
        data["concurrency"] = limits.concurrency
    try:
        spec = FunctionSpec.model_validate(data)
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise BadRequestError(f"invalid action: {detail}") from exc
    syntax = check_syntax(spec)
    if syntax is not None:
        raise BadRequestError(f"the action's code has a syntax error at {syntax}")
    return spec


@router.get("")
async def list_actions(
    request: Request,
    ns: str,
    limit: Annotated[int, Query(ge=0, le=200)] = 30,
    skip: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    """The namespace's actions (without code), by name."""
    ns = resolve(request, ns)
    state = state_of(request)
    specs = [s for s in await state.registry.list() if belongs(s.name, ns)]
    chosen = specs[skip : skip + limit] if limit else specs[skip:]
    docs = []
    for spec in chosen:
        doc = shapes.action(spec, ns, await ow_store(request).get("action", spec.name))
        doc["exec"].pop("code", None)
        docs.append(doc)
    return as_json(docs)


@router.put("/{name}")
async def put_action(
    request: Request, ns: str, name: str, body: ActionIn, overwrite: str | None = None
) -> Response:
    """Create an action; update it (version bump) with `?overwrite=true`, else 409."""
    ns = resolve(request, ns)
    qname = qualified(ns, name, "action")
    state = state_of(request)
    try:
        current: FunctionSpec | None = await state.registry.get(qname)
    except NotFoundError:
        current = None
    if current is not None and not flag(overwrite):
        raise ConflictError(f"action {name!r} exists already (use ?overwrite=true)", action=name)
    spec = await state.registry.put(_spec(body, qname, current, state.settings))
    state.cache.remember(spec)
    meta = await ow_store(request).get("action", qname) or {}
    if body.exec is not None:
        meta["kind"] = body.exec.kind
    meta.update(
        parameters=[p.model_dump() for p in body.parameters],
        annotations=[a.model_dump() for a in body.annotations if a.key != "exec"],
        publish=body.publish,
    )
    await ow_store(request).put("action", qname, meta)
    return as_json(shapes.action(spec, ns, meta))


@router.get("/{name}")
async def get_action(request: Request, ns: str, name: str) -> Response:
    """One action, with its code."""
    ns = resolve(request, ns)
    qname = qualified(ns, name, "action")
    spec = await state_of(request).registry.get(qname)
    return as_json(shapes.action(spec, ns, await ow_store(request).get("action", qname)))


@router.delete("/{name}")
async def delete_action(request: Request, ns: str, name: str) -> Response:
    """Delete an action; answers with what it was."""
    ns = resolve(request, ns)
    qname = qualified(ns, name, "action")
    state = state_of(request)
    spec = await state.registry.get(qname)
    meta = await ow_store(request).get("action", qname)
    await state.registry.delete(qname)
    state.cache.forget(qname)
    await ow_store(request).delete("action", qname)
    return as_json(shapes.action(spec, ns, meta))


@router.post("/{name}")
async def invoke_action(
    request: Request,
    ns: str,
    name: str,
    blocking: str | None = None,
    result: str | None = None,
    timeout: Annotated[int | None, Query(description="blocking wait, ms")] = None,
) -> Response:
    """Invoke: 202 `{activationId}` unless blocking; blocking past its wait answers 202 too."""
    ns = resolve(request, ns)
    qname = qualified(ns, name, "action")
    state = state_of(request)
    spec = state.cache.get(qname)
    raw = await request.body()
    try:
        args = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"the parameters are not valid JSON: {exc}") from exc
    if not isinstance(args, dict):
        raise BadRequestError("the parameters must be a JSON object")
    meta = await ow_store(request).get("action", qname) or {}
    params = {p["key"]: p.get("value") for p in meta.get("parameters", [])} | args
    body = orjson.dumps(params)
    kind = "application/json"
    if not flag(blocking):
        activation_id = await state.invoker.invoke_async(spec, body, content_type=kind)
        state.metrics.accepted.labels(qname, "async").inc()
        return as_json({"activationId": activation_id}, 202, {ACTIVATION_HEADER: activation_id})
    if timeout is not None and timeout <= 0:
        raise BadRequestError("timeout must be a positive number of milliseconds")
    wait = min((timeout or 60_000) / 1000, state.settings.sync_wait_s)
    outcome = await state.invoker.invoke_sync(spec, body, content_type=kind, wait=wait)
    state.metrics.accepted.labels(qname, "sync").inc()
    headers = {ACTIVATION_HEADER: outcome.activation_id}
    if outcome.record is None:
        return as_json({"activationId": outcome.activation_id}, 202, headers)
    record = outcome.record
    if len(orjson.dumps(record.result)) > state.settings.max_result_bytes:
        raise TooLargeError(
            f"the result is over the {state.settings.max_result_bytes}-byte limit",
            activation_id=record.id,
        )
    doc = shapes.activation(record, spec)
    answer = doc["response"]["result"] if flag(result) else doc
    status = 200 if record.status is ActivationStatus.SUCCESS else 502
    return as_json(answer, status, headers)
