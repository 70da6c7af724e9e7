"""OpenWhisk packages: create/update (PUT), get (with its actions), delete, list; bindings.

A package is an OpenWhisk document (`package.<internal name>` in the `openwhisk` bucket): its
parameters are defaults under its actions' own. A binding (`binding: {namespace, name}`) names
another package of the caller's namespace and adds parameters of its own; it holds no actions.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from eventbus.errors import ConflictError, NotFoundError
from eventbus.namespaces import belongs
from gateway.auth import ForbiddenError
from gateway.openwhisk import shapes
from gateway.openwhisk.common import PREFIX, as_json, flag, ow_store, qualified, resolve
from gateway.openwhisk.errors import BadRequestError
from gateway.openwhisk.refs import SEQUENCE_KIND, package_doc
from gateway.openwhisk.types import Binding, PackageIn
from gateway.state import state_of

router = APIRouter(prefix=PREFIX + "/packages", tags=["openwhisk"])


async def _members(request: Request, ns: str, home: str) -> list[dict[str, Any]]:
    """`{name, version, annotations}` of each action in package ``home``."""
    store, state = ow_store(request), state_of(request)
    found = []
    for qname in await store.names("action"):
        meta = await store.get("action", qname)
        if not belongs(qname, ns) or not meta or meta.get("package") != home:
            continue
        if meta.get("kind") == SEQUENCE_KIND:
            version = int(meta.get("version", 1))
        else:
            spec = state.cache.specs.get(qname)
            if spec is None:
                try:
                    spec = await state.registry.get(qname)
                except NotFoundError:
                    continue
            version = spec.version
        name = qname.rsplit("=", 1)[-1][len(home) + 2 :]
        kind = meta.get("kind", "python:3.11")
        annotations = [*meta.get("annotations", []), {"key": "exec", "value": kind}]
        found.append({"name": name, "version": shapes.semver(version), "annotations": annotations})
    return sorted(found, key=lambda a: a["name"])


@router.get("")
async def list_packages(
    request: Request,
    ns: str,
    limit: Annotated[int, Query(ge=0, le=200)] = 30,
    skip: Annotated[int, Query(ge=0)] = 0,
    count: str | None = None,
    public: str | None = None,
) -> Response:
    """The namespace's packages and bindings; `count=true`: `{"packages": N}`."""
    ns = resolve(request, ns)
    store = ow_store(request)
    names = [n for n in await store.names("package") if belongs(n, ns)]
    if flag(count):
        return as_json({"packages": len(names)})
    chosen = names[skip : skip + limit] if limit else names[skip:]
    docs = [d for n in chosen if (d := await store.get("package", n)) is not None]
    return as_json([shapes.package(d) for d in docs])


@router.put("/{name}")
async def put_package(
    request: Request, ns: str, name: str, body: PackageIn, overwrite: str | None = None
) -> Response:
    """Create a package or a binding; update it with `?overwrite=true`, else 409."""
    ns = resolve(request, ns)
    qname = qualified(ns, name, "package")
    store = ow_store(request)
    current = await store.get("package", qname)
    if current is not None and not flag(overwrite):
        raise ConflictError(f"package {name!r} exists already (use ?overwrite=true)")
    binding: dict[str, str] = {}
    if isinstance(body.binding, Binding):
        if body.binding.namespace not in ("_", ns):
            raise ForbiddenError(f"package {body.binding.name!r} lies in another namespace")
        bound = await package_doc(request, ns, body.binding.name)
        if bound.get("binding"):
            raise BadRequestError(f"package {body.binding.name!r} is a binding: bind a package")
        if body.binding.name == name:
            raise BadRequestError("a package cannot bind itself")
        binding = {"namespace": ns, "name": body.binding.name}
    elif body.binding:
        raise BadRequestError("binding must be {namespace, name}")
    elif current is not None and current.get("binding"):
        binding = current["binding"]
    if current is not None and bool(current.get("binding")) != bool(binding):
        raise ConflictError(f"package {name!r} cannot change between package and binding")
    version = (int(current["version"].rsplit(".", 1)[-1]) + 1) if current else 1
    doc = {
        "namespace": ns,
        "name": name,
        "version": shapes.semver(version),
        "publish": False,
        "binding": binding,
        "parameters": [p.model_dump() for p in body.parameters],
        "annotations": [a.model_dump() for a in body.annotations],
        "updated": shapes.ms(datetime.now(UTC)),
    }
    await store.put("package", qname, doc)
    return as_json(shapes.package(doc))


@router.get("/{name}")
async def get_package(request: Request, ns: str, name: str) -> Response:
    """One package with its actions (a binding: the bound package's actions)."""
    ns = resolve(request, ns)
    doc = await package_doc(request, ns, name)
    home = (doc.get("binding") or {}).get("name") or name
    return as_json(shapes.package(doc, await _members(request, ns, home)))


@router.delete("/{name}")
async def delete_package(request: Request, ns: str, name: str) -> Response:
    """Delete a package (409 while it holds actions) or a binding."""
    ns = resolve(request, ns)
    doc = await package_doc(request, ns, name)
    if not doc.get("binding"):
        members = await _members(request, ns, name)
        if members:
            raise ConflictError(f"package {name!r} is not empty (it holds {len(members)} actions)")
    await ow_store(request).delete("package", qualified(ns, name, "package"))
    return as_json(shapes.package(doc))
