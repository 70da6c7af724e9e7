"""The catalog in JetStream KV (`modules.<name>`, `versions.<name>.<n>`), artifacts in storage.

A module belongs to the namespace that published it (`Module.owner`); a store acts for one
namespace (``actor``) and refuses to change a module another namespace owns. Anyone may read.

Every change is compare-and-set on the KV entry, then announced as a catalog CloudEvent whose id
is derived from the change (a retried write re-announces under the same id, so JetStream drops
the duplicate).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from nats.js.kv import KeyValue

from eventbus.connection import Bus
from eventbus.errors import ConflictError
from eventbus.kv import cas, keys, read
from eventbus.namespaces import DEFAULT_NAMESPACE
from eventbus.publish import publish_event
from eventbus.storage import Storage
from eventbus.storage.errors import BucketExistsError, NoSuchBucketError
from eventbus.types import CloudEvent
from runtimes.catalog.errors import CatalogForbiddenError
from runtimes.catalog.gate import decide
from runtimes.catalog.types import (
    ARTIFACT_BUCKET,
    CATALOG_KV,
    Artifact,
    GateDecision,
    Lineage,
    ModelVersion,
    Module,
    ModuleSpec,
    VersionState,
)
from runtimes.errors import ModelError, ModelNotFoundError

log = logging.getLogger(__name__)
#: where the modules are in the catalog's bucket (`modules.<name>`)
MODULE_PREFIX = "modules."


class CatalogStore:
    """Browse, publish, version, promote, retire and roll back catalog modules.

    Writes act for ``actor``, a namespace: they change only modules it owns, and a module it
    publishes is its own. ``actor=None`` reads only (an anonymous caller).
    """

    def __init__(
        self,
        bus: Bus,
        storage: Storage | None,
        *,
        bucket: str = ARTIFACT_BUCKET,
        actor: str | None = DEFAULT_NAMESPACE,
    ) -> None:
        self.bus = bus
        self.storage = storage
        self.bucket = bucket
        self.actor = actor

    def authorize(self, module: Module) -> None:
        """`CatalogForbiddenError` unless the actor owns ``module``."""
        _authorize(self.actor, module.name, module.owner)

    async def check_owner(self, name: str) -> Module:
        """The module, if the actor may change it; `CatalogForbiddenError` if not."""
        module = await self.get_module(name)
        self.authorize(module)
        return module

    # -- modules -------------------------------------------------------------------------------

    async def list_modules(
        self, query: str | None = None, keyword: str | None = None, framework: str | None = None
    ) -> list[Module]:
        """Modules by name; ``query`` searches name/title/description/keywords, case-blind."""
        kv = await self._kv()
        modules = []
        for key in sorted(await keys(kv, "modules.")):
            module = await read(kv, key, Module)
            if module is not None and _matches(module[0], query, keyword, framework):
                modules.append(module[0])
        return modules

    async def get_module(self, name: str) -> Module:
        """A module, or `ModelNotFoundError`."""
        found = await read(await self._kv(), _module_key(name), Module)
        if found is None:
            raise ModelNotFoundError(f"no module {name!r} in the catalog", model=name)
        return found[0]

    async def publish(self, spec: ModuleSpec, *, replace: bool = False) -> Module:
        """Add a module (`ConflictError` if it exists, unless ``replace``); keeps its versions."""
        kv = await self._kv()
        now = datetime.now(UTC)
        actor = _authorize(self.actor, spec.name, None)
        found = await read(kv, _module_key(spec.name), Module)
        if found is not None:
            self.authorize(found[0])
            if not replace:
                raise ConflictError(
                    f"module {spec.name!r} is in the catalog already", model=spec.name
                )

        def change(current: Module | None) -> Module:
            kept: dict[str, Any] = {"created": now, "owner": actor}
            if current is not None:
                self.authorize(current)  # it may have been published in between
                kept = current.model_dump(
                    include={"promoted", "latest", "promotions", "created", "owner"}
                )
            return Module.model_validate({**spec.model_dump(), **kept, "updated": now})

        module, revision = await cas(kv, _module_key(spec.name), Module, change)
        kind = "module.updated" if found is not None else "module.published"
        await self._announce(kind, module, None, f"{spec.name}-{kind}-{revision}")
        return module

    async def delete_module(self, name: str) -> None:
        """Remove a module and its version records (artifacts stay, for audit)."""
        kv = await self._kv()
        module = await self.check_owner(name)
        for key in await keys(kv, f"versions.{name}."):
            await kv.delete(key)
        await kv.delete(_module_key(name))
        await self._announce("module.deleted", module, None, f"{name}-deleted-{module.updated}")

    # -- versions ------------------------------------------------------------------------------

    async def list_versions(self, name: str) -> list[ModelVersion]:
        """Every version of a module, oldest first."""
        kv = await self._kv()
        module = await self.get_module(name)
        versions = []
        for key in await keys(kv, f"versions.{name}."):
            found = await read(kv, key, ModelVersion)
            if found is not None:
                versions.append(_as_served(found[0], module.promoted))
        return sorted(versions, key=lambda v: v.version)

    async def get_version(self, name: str, version: int) -> ModelVersion:
        """One version, or `ModelNotFoundError` naming the versions that exist."""
        module = await self.get_module(name)
        return _as_served(await self.stored_version(name, version), module.promoted)

    async def stored_version(self, name: str, version: int) -> ModelVersion:
        """One version as stored: its `state` may lag the module's pointer (see `_as_served`)."""
        found = await read(await self._kv(), _version_key(name, version), ModelVersion)
        if found is None:
            known = [v.version for v in await self.list_versions(name)]
            raise ModelNotFoundError(
                f"module {name!r} has no version {version} (versions: {known or 'none'})",
                model=name,
                version=version,
                known=known,
            )
        return found[0]

    async def promoted_number(self, name: str) -> int:
        """The number of the version served by default; `ModelNotFoundError` if none is."""
        module = await self.get_module(name)
        if module.promoted is None:
            raise ModelNotFoundError(
                f"module {name!r} has no promoted version yet (train one first)", model=name
            )
        return module.promoted

    async def promoted(self, name: str) -> ModelVersion:
        """The version inference serves by default; `ModelNotFoundError` if none is promoted."""
        number = await self.promoted_number(name)
        return _as_served(await self.stored_version(name, number), number)

    async def add_version(
        self,
        name: str,
        artifact: bytes,
        *,
        metrics: dict[str, float],
        lineage: Lineage,
        metric: str | None = None,
    ) -> ModelVersion:
        """Store an artifact and record it as a new `candidate`; idempotent per activation."""
        kv = await self._kv()
        module = await self.check_owner(name)
        if lineage.activation:
            for existing in await self.list_versions(name):
                if existing.lineage.activation == lineage.activation:
                    return existing  # a retried training run: the version exists already

        def bump(current: Module | None) -> Module:
            if current is None:
                raise ModelNotFoundError(f"no module {name!r} in the catalog", model=name)
            self.authorize(current)
            return current.model_copy(update={"latest": current.latest + 1})

        module, _ = await cas(kv, _module_key(name), Module, bump)
        number = module.latest
        stored = await self._put_artifact(name, number, artifact)
        now = datetime.now(UTC)
        version = ModelVersion(
            module=name,
            version=number,
            artifact=stored,
            metrics=metrics,
            metric=metric or module.metric,
            lineage=lineage.model_copy(update={"parent": lineage.parent or module.promoted}),
            created=now,
            updated=now,
        )
        await kv.create(_version_key(name, number), version.model_dump_json().encode())
        await self._announce("model.version.created", module, version, f"{name}-v{number}-created")
        return version

    async def promote(self, name: str, version: int, *, reason: str = "promoted") -> ModelVersion:
        """Serve ``version`` from now on; the one it replaces goes back to `candidate`."""
        await self.check_owner(name)
        target = await self.stored_version(name, version)
        if target.state is VersionState.RETIRED:
            raise ConflictError(
                f"version {version} of {name!r} is retired; it cannot be promoted",
                model=name,
                version=version,
            )
        kv = await self._kv()
        previous: list[int | None] = []

        def point(current: Module | None) -> Module:
            if current is None:
                raise ModelNotFoundError(f"no module {name!r} in the catalog", model=name)
            self.authorize(current)
            previous[:] = [current.promoted]
            return current.model_copy(
                update={
                    "promoted": version,
                    "promotions": [*current.promotions, version][-100:],
                    "updated": datetime.now(UTC),
                }
            )

        module, revision = await cas(kv, _module_key(name), Module, point)
        old = previous[0] if previous else None
        if old is not None and old != version:
            await self._set_state(name, old, VersionState.CANDIDATE, f"superseded by {version}")
        promoted = await self._set_state(name, version, VersionState.PROMOTED, reason)
        await self._announce(
            "model.version.promoted", module, promoted, f"{name}-v{version}-promoted-{revision}"
        )
        return promoted

    async def retire(self, name: str, version: int, *, reason: str = "retired") -> ModelVersion:
        """Withdraw a version; retiring the promoted one needs another promoted first."""
        module = await self.check_owner(name)
        if module.promoted == version:
            raise ConflictError(
                f"version {version} of {name!r} is the promoted one: promote or roll back to "
                "another version first",
                model=name,
                version=version,
            )
        retired = await self._set_state(name, version, VersionState.RETIRED, reason)
        await self._announce("model.version.retired", module, retired, f"{name}-v{version}-retired")
        return retired

    async def rollback(self, name: str, to: int | None = None) -> ModelVersion:
        """Promote ``to``, or the version promoted before the current one (not retired)."""
        module = await self.check_owner(name)
        if to is None:
            for number in reversed(module.promotions):
                if number == module.promoted:
                    continue
                candidate = await self.stored_version(name, number)
                if candidate.state is not VersionState.RETIRED:
                    to = number
                    break
            if to is None:
                raise ConflictError(
                    f"module {name!r} has no earlier promoted version to roll back to", model=name
                )
        return await self.promote(name, to, reason=f"rolled back from {module.promoted}")

    async def gate(self, name: str, version: int) -> tuple[GateDecision, ModelVersion]:
        """Promote a candidate if the gate allows, else leave it a candidate with the reason."""
        module = await self.check_owner(name)
        candidate = await self.stored_version(name, version)
        current = await self.stored_version(name, module.promoted) if module.promoted else None
        decision = decide(candidate, current, module.tolerance)
        if decision.promote:
            return decision, await self.promote(name, version, reason=decision.reason)
        rejected = await self._set_state(name, version, VersionState.CANDIDATE, decision.reason)
        await self._announce(
            "model.version.rejected", module, rejected, f"{name}-v{version}-rejected"
        )
        return decision, rejected

    async def read_artifact(self, version: ModelVersion) -> bytes:
        """The artifact's bytes, checked against the recorded checksum."""
        if self.storage is None:
            raise ModelError("this process has no object store to read artifacts from")
        _, stream = await self.storage.get(version.artifact.bucket, version.artifact.key)
        data = b"".join([chunk async for chunk in stream])
        if hashlib.sha256(data).hexdigest() != version.artifact.sha256:
            raise ModelError(
                f"artifact of {version.module} v{version.version} does not match its checksum",
                model=version.module,
                version=version.version,
            )
        return data

    # -- internals -----------------------------------------------------------------------------

    async def _kv(self) -> KeyValue:
        return await self.bus.kv(CATALOG_KV)

    async def _put_artifact(self, name: str, number: int, artifact: bytes) -> Artifact:
        if self.storage is None:
            raise ModelError("this process has no object store to keep artifacts in")
        key = f"{name}/v{number}/model.bin"
        try:
            info = await self.storage.put(self.bucket, key, artifact)
        except NoSuchBucketError:
            with contextlib.suppress(BucketExistsError):
                await self.storage.create_bucket(self.bucket)
            info = await self.storage.put(self.bucket, key, artifact)
        sha = hashlib.sha256(artifact).hexdigest()
        return Artifact(bucket=info.bucket, key=info.key, size=info.size, sha256=sha)

    async def _set_state(
        self, name: str, version: int, state: VersionState, reason: str
    ) -> ModelVersion:
        kv = await self._kv()

        def change(current: ModelVersion | None) -> ModelVersion:
            if current is None:
                raise ModelNotFoundError(
                    f"module {name!r} has no version {version}", model=name, version=version
                )
            return current.model_copy(
                update={"state": state, "reason": reason, "updated": datetime.now(UTC)}
            )

        updated, _ = await cas(kv, _version_key(name, version), ModelVersion, change)
        return updated

    async def _announce(
        self, kind: str, module: Module, version: ModelVersion | None, event_id: str
    ) -> None:
        data: dict[str, Any] = {
            "module": module.name,
            "promoted": module.promoted,
            "latest": module.latest,
        }
        if version is not None:
            data["version"] = version.model_dump(mode="json")
        event = CloudEvent.create(
            id=f"catalog-{event_id}",
            type=self.bus.event_type(f"catalog.{kind}"),
            source=f"/catalog/modules/{module.name}",
            subject=module.name if version is None else f"{module.name}/v{version.version}",
            data=data,
        )
        await _retry(lambda: publish_event(self.bus, event), what=event.type)


def _authorize(actor: str | None, name: str, owner: str | None) -> str:
    """The actor, if it may write ``name`` (owned by ``owner``; None: not in the catalog)."""
    if actor is None:
        raise CatalogForbiddenError(
            "changing the catalog needs an API key or a bearer token", model=name
        )
    if owner is not None and owner != actor:
        # names the rule, not the owner: the 403 tells the caller nothing it could not read
        raise CatalogForbiddenError(
            f"module {name!r} belongs to another namespace: only the namespace that published "
            "a module may change it",
            model=name,
        )
    return actor


def _as_served(version: ModelVersion, promoted: int | None) -> ModelVersion:
    """``version`` with the state the module's pointer gives it.

    A promotion moves the pointer (one compare-and-set) and then writes the two versions'
    states; a reader in between, or after a crash in between, would see the module serving a
    `candidate`. The pointer is the truth: the version it names is `promoted`, another that
    still says `promoted` is a `candidate`. A retired version stays retired.
    """
    if version.state is VersionState.RETIRED:
        return version
    if version.version == promoted:
        state = VersionState.PROMOTED
    elif version.state is VersionState.PROMOTED:
        state = VersionState.CANDIDATE
    else:
        return version
    return version if state is version.state else version.model_copy(update={"state": state})


def _module_key(name: str) -> str:
    return f"{MODULE_PREFIX}{name}"


def _version_key(name: str, version: int) -> str:
    return f"versions.{name}.{version}"


def _matches(module: Module, query: str | None, keyword: str | None, framework: str | None) -> bool:
    if framework and module.framework.lower() != framework.lower():
        return False
    if keyword and keyword.lower() not in (k.lower() for k in module.keywords):
        return False
    if query:
        text = " ".join([module.name, module.title, module.description, *module.keywords])
        return query.lower() in text.lower()
    return True


async def _retry(call: Callable[[], Awaitable[Any]], *, what: str, tries: int = 3) -> None:
    for attempt in range(1, tries + 1):
        try:
            await call()
            return
        except Exception as exc:
            if attempt == tries:
                log.warning("could not publish %s: %s", what, exc)
