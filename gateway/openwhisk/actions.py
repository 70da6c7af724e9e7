"""OpenWhisk actions: create/update (PUT), get, delete, list, and invoke (POST).

An action is a native function: the same object shows through `/v1/functions`. An action in a
package is the function `<pkg>--<name>` (`gateway.openwhisk.refs`); a sequence is an OpenWhisk
document only, run by the gateway (`gateway.openwhisk.sequences`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from eventbus.errors import ConflictError, NotFoundError
from eventbus.namespaces import belongs
from gateway.openwhisk import shapes
from gateway.openwhisk.action_specs import function_spec, refuse_web, sequence_meta
from gateway.openwhisk.common import PREFIX, as_json, flag, ow_store, resolve
from gateway.openwhisk.errors import BadRequestError
from gateway.openwhisk.invoking import invoke, parameters
from gateway.openwhisk.refs import (
    SEQUENCE_KIND,
    ActionRef,
    action_ref,
    load_action,
    package_doc,
    ref_of,
)
from gateway.openwhisk.types import ActionIn
from gateway.state import state_of
from runtimes.types import FunctionSpec

router = APIRouter(prefix=PREFIX + "/actions", tags=["openwhisk"])
Limit = Annotated[int, Query(ge=0, le=200)]
Skip = Annotated[int, Query(ge=0)]


async def _listed(request: Request, ns: str, package: str | None) -> list[dict[str, Any]]:
    """Every action of the namespace (or of one package), by name, without code."""
    state, store = state_of(request), ow_store(request)
    metas = {n: await store.get("action", n) for n in await store.names("action") if belongs(n, ns)}
    found: dict[str, tuple[ActionRef, FunctionSpec | None, dict[str, Any]]] = {}
    for native in await state.registry.list():
        if belongs(native.name, ns):
            own = metas.get(native.name) or {}
            found[native.name] = (ref_of(ns, native.name, own), native, own)
    for qname, seq in metas.items():
        if seq and seq.get("kind") == SEQUENCE_KIND:
            found[qname] = (ref_of(ns, qname, seq), None, seq)
    docs = []
    for ref, spec, meta in sorted(found.values(), key=lambda f: f[0].path):
        if package is None or ref.home == package:
            doc = shapes.action(ref.name, ref.namespace_path, spec, meta)
            doc["exec"].pop("code", None)
            docs.append(doc)
    return docs


def _page(docs: list[dict[str, Any]], what: str, limit: int, skip: int, count: str | None) -> Any:
    if flag(count):
        return {what: len(docs)}
    return docs[skip : skip + limit] if limit else docs[skip:]


@router.get("")
async def list_actions(
    request: Request, ns: str, limit: Limit = 30, skip: Skip = 0, count: str | None = None
) -> Response:
    """The namespace's actions (packages' included), by path; `count=true`: `{"actions": N}`."""
    docs = await _listed(request, resolve(request, ns), None)
    return as_json(_page(docs, "actions", limit, skip, count))


@router.get("/{package}/")
async def list_package_actions(
    request: Request,
    ns: str,
    package: str,
    limit: Limit = 30,
    skip: Skip = 0,
    count: str | None = None,
) -> Response:
    """The actions of one package (of the bound package, for a binding)."""
    ns = resolve(request, ns)
    doc = await package_doc(request, ns, package)
    home = (doc.get("binding") or {}).get("name") or package
    docs = await _listed(request, ns, home)
    return as_json(_page(docs, "actions", limit, skip, count))


async def _put(request: Request, ref: ActionRef, body: ActionIn, overwrite: str | None) -> Response:
    state, store = state_of(request), ow_store(request)
    if ref.package is not None and ref.home != ref.package:
        raise BadRequestError(f"package {ref.package!r} is a binding: it cannot hold actions")
    refuse_web(body)
    meta = await store.get("action", ref.qname) or {}
    try:
        current: FunctionSpec | None = await state.registry.get(ref.qname)
    except NotFoundError:
        current = None
    is_sequence = meta.get("kind") == SEQUENCE_KIND
    if (current is not None or is_sequence) and meta.get("package") != ref.home:
        raise ConflictError(f"the name {ref.qname!r} is taken by another function")
    if (current is not None or is_sequence) and not flag(overwrite):
        raise ConflictError(f"action {ref.name!r} exists already (use ?overwrite=true)")
    old_version = current.version if current else int(meta.get("version", 0))
    to_sequence = body.exec is not None and body.exec.kind == SEQUENCE_KIND
    spec: FunctionSpec | None = None
    if to_sequence or (is_sequence and body.exec is None):
        if to_sequence:
            meta = {**meta, **await sequence_meta(request, ref, body, old_version + 1)}
        else:
            meta = {**meta, **{"version": old_version + 1}}
        if current is not None:  # a function becomes a sequence
            await state.registry.delete(ref.qname)
            state.cache.forget(ref.qname)
    else:
        base = None if is_sequence else current
        spec = await state.registry.put(function_spec(body, ref.qname, base, state.settings))
        state.cache.remember(spec)
        meta = {k: v for k, v in meta.items() if k not in ("components", "version", "updated")}
        if body.exec is not None:
            meta["kind"] = body.exec.kind
    meta.update(
        parameters=[p.model_dump() for p in body.parameters],
        annotations=[a.model_dump() for a in body.annotations if a.key != "exec"],
        publish=body.publish,
        package=ref.home,
    )
    await store.put("action", ref.qname, meta)
    return as_json(shapes.action(ref.name, ref.namespace_path, spec, meta))


async def _get(request: Request, ref: ActionRef) -> Response:
    spec, meta = await load_action(request, ref)
    doc = shapes.action(ref.name, ref.namespace_path, spec, meta)
    if ref.inherited:  # through a package: its parameters under the action's
        merged = ref.inherited | {p["key"]: p.get("value") for p in doc["parameters"]}
        doc["parameters"] = [{"key": k, "value": v} for k, v in merged.items()]
    return as_json(doc)


async def _delete(request: Request, ref: ActionRef) -> Response:
    state = state_of(request)
    spec, meta = await load_action(request, ref)
    if spec is not None:
        await state.registry.delete(ref.qname)
        state.cache.forget(ref.qname)
    await ow_store(request).delete("action", ref.qname)
    return as_json(shapes.action(ref.name, ref.namespace_path, spec, meta))


async def _post(
    request: Request,
    ref: ActionRef,
    blocking: str | None,
    result: str | None,
    timeout: int | None,
) -> Response:
    args = parameters(await request.body())
    return await invoke(
        request, ref, args, blocking=flag(blocking), result_only=flag(result), timeout=timeout
    )


@router.put("/{name}")
async def put_action(
    request: Request, ns: str, name: str, body: ActionIn, overwrite: str | None = None
) -> Response:
    """Create an action; update it (version bump) with `?overwrite=true`, else 409."""
    ref = await action_ref(request, resolve(request, ns), name)
    return await _put(request, ref, body, overwrite)


@router.put("/{package}/{name}")
async def put_package_action(
    request: Request,
    ns: str,
    package: str,
    name: str,
    body: ActionIn,
    overwrite: str | None = None,
) -> Response:
    """Create or update an action inside a package."""
    ref = await action_ref(request, resolve(request, ns), name, package)
    return await _put(request, ref, body, overwrite)


@router.get("/{name}")
async def get_action(request: Request, ns: str, name: str) -> Response:
    """One action, with its code (a sequence: its components)."""
    return await _get(request, await action_ref(request, resolve(request, ns), name))


@router.get("/{package}/{name}")
async def get_package_action(request: Request, ns: str, package: str, name: str) -> Response:
    """One action of a package (through a binding: with the binding's parameters)."""
    return await _get(request, await action_ref(request, resolve(request, ns), name, package))


@router.delete("/{name}")
async def delete_action(request: Request, ns: str, name: str) -> Response:
    """Delete an action; answers with what it was."""
    return await _delete(request, await action_ref(request, resolve(request, ns), name))


@router.delete("/{package}/{name}")
async def delete_package_action(request: Request, ns: str, package: str, name: str) -> Response:
    """Delete an action of a package."""
    ref = await action_ref(request, resolve(request, ns), name, package)
    if ref.home != ref.package:
        raise BadRequestError(f"package {package!r} is a binding: delete it in {ref.home!r}")
    return await _delete(request, ref)


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
    ref = await action_ref(request, resolve(request, ns), name)
    return await _post(request, ref, blocking, result, timeout)


@router.post("/{package}/{name}")
async def invoke_package_action(
    request: Request,
    ns: str,
    package: str,
    name: str,
    blocking: str | None = None,
    result: str | None = None,
    timeout: Annotated[int | None, Query(description="blocking wait, ms")] = None,
) -> Response:
    """Invoke an action of a package (package parameters < action's < the body)."""
    ref = await action_ref(request, resolve(request, ns), name, package)
    return await _post(request, ref, blocking, result, timeout)
