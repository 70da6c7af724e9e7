"""Which action a path or reference names: plain, in a package, or through a package binding.

An action in package `p` is the native function `p--<name>` of the namespace (OpenWhisk's
`/ns/p/name`); its OpenWhisk document says which package it lies in, so a native function
that happens to be called `a--b` stays a plain action. A binding names another package of the
same namespace and adds its own parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eventbus.errors import NotFoundError
from eventbus.namespaces import qualify
from gateway.auth import ForbiddenError
from gateway.openwhisk.common import check_name, ow_store
from gateway.openwhisk.errors import BadRequestError
from gateway.state import state_of
from runtimes.types import FunctionSpec

MEMBER_SEPARATOR = "--"
SEQUENCE_KIND = "sequence"


@dataclass(frozen=True)
class ActionRef:
    """An action as a path names it, and the function (or sequence) it resolves to."""

    ns: str
    name: str
    #: the package as the path names it (a package or a binding), if any
    package: str | None = None
    #: the package the action really lies in (the bound one for a binding)
    home: str | None = None
    #: parameters inherited from the package (bound package < binding)
    inherited: dict[str, Any] = field(default_factory=dict)

    @property
    def qname(self) -> str:
        """The internal name of the native function (or sequence document)."""
        local = f"{self.home}{MEMBER_SEPARATOR}{self.name}" if self.home else self.name
        return qualify(self.ns, local)

    @property
    def path(self) -> str:
        """OpenWhisk's fully qualified name `/ns/[pkg/]name`, as the caller named it."""
        return f"/{self.namespace_path}/{self.name}"

    @property
    def namespace_path(self) -> str:
        """The `namespace` field of the action's document (`ns/pkg` inside a package)."""
        return f"{self.ns}/{self.package}" if self.package else self.ns


def params_of(doc: dict[str, Any] | None) -> dict[str, Any]:
    """OpenWhisk's `parameters` list as a dict."""
    return {p["key"]: p.get("value") for p in (doc or {}).get("parameters", [])}


def ref_of(ns: str, qname: str, meta: dict[str, Any] | None) -> ActionRef:
    """The reference of a stored action (its document says which package it lies in)."""
    home = (meta or {}).get("package")
    local = qname.rsplit("=", 1)[-1]
    if home and local.startswith(home + MEMBER_SEPARATOR):
        return ActionRef(ns=ns, name=local[len(home) + 2 :], package=home, home=home)
    return ActionRef(ns=ns, name=local)


async def stored_ref(request: Any, ns: str, qname: str) -> ActionRef:
    """The reference of the action whose internal name is ``qname`` (with its package's
    parameters; a package since deleted: without them)."""
    ref = ref_of(ns, qname, await ow_store(request).get("action", qname))
    if ref.package is None:
        return ref
    try:
        return await action_ref(request, ns, ref.name, ref.package)
    except NotFoundError:
        return ref


async def package_doc(request: Any, ns: str, name: str) -> dict[str, Any]:
    """A package (or binding) document of ``ns``; 404 when absent."""
    doc = await ow_store(request).get("package", qualify(ns, check_name(name, "package")))
    if doc is None:
        raise NotFoundError(f"package {name!r} does not exist", package=name)
    return doc


async def action_ref(request: Any, ns: str, name: str, package: str | None = None) -> ActionRef:
    """Resolve `[package/]name` in ``ns`` (a binding resolves to its bound package)."""
    check_name(name, "action")
    if package is None:
        return ActionRef(ns=ns, name=name)
    doc = await package_doc(request, ns, package)
    home, inherited = package, params_of(doc)
    binding = doc.get("binding") or {}
    if binding:
        bound = await package_doc(request, ns, binding["name"])
        home, inherited = binding["name"], params_of(bound) | inherited
    ref = ActionRef(ns=ns, name=name, package=package, home=home, inherited=inherited)
    if len(ref.qname.rsplit("=", 1)[-1]) > 63:
        raise BadRequestError(
            f"the package and action names {home!r}, {name!r} are together over 61 characters"
        )
    return ref


async def parse_ref(request: Any, ns: str, ref: str, what: str = "action") -> ActionRef:
    """An action reference: `name`, `pkg/name`, `/ns/name`, `/ns/pkg/name` (`_` = own ns)."""
    parts = [p for p in ref.strip().split("/") if p]
    qualified = ref.strip().startswith("/")
    if not qualified and len(parts) == 2 and parts[0] in ("_", ns):
        qualified = True  # `ns/name`, as rules have always been written
    if qualified:
        if len(parts) not in (2, 3):
            raise BadRequestError(f"the {what} {ref!r} is not `/namespace/[package/]name`")
        if parts[0] not in ("_", ns):
            raise ForbiddenError(f"the {what} {ref!r} lies in another namespace")
        parts = parts[1:]
    if len(parts) not in (1, 2):
        raise BadRequestError(f"the {what} {ref!r} is not `[package/]name`")
    return await action_ref(request, ns, parts[-1], parts[0] if len(parts) == 2 else None)


async def load_action(request: Any, ref: ActionRef) -> tuple[FunctionSpec | None, dict[str, Any]]:
    """The action's function (None for a sequence) and its OpenWhisk document; 404 if neither."""
    meta = await ow_store(request).get("action", ref.qname) or {}
    missing = NotFoundError(f"action {ref.path!r} does not exist", action=ref.name)
    if meta.get("package") != ref.home:
        raise missing  # e.g. a plain `a--b` asked for as `a/b`, or the other way round
    if meta.get("kind") == SEQUENCE_KIND:
        return None, meta
    state = state_of(request)
    spec = state.cache.specs.get(ref.qname)
    if spec is None:  # the watch may lag behind a write of another gateway
        try:
            spec = await state.registry.get(ref.qname)
        except NotFoundError:
            raise missing from None
    return spec, meta
