"""Deployment records (desired vs actual) in the `deployments` KV bucket, and their lifecycle.

A record says what is wanted (`desired`: running or released, the spec, the placement
constraints) and what is (`site`, `handle`, `status`, `reason`), with every site tried.
`Deployments` creates, updates (rolling: the new runtime is ready before the old one is
released), redeploys, undeploys and reconciles them; ranking is a callable it is given.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from nats.js.errors import KeyNotFoundError
from pydantic import BaseModel, Field

from eventbus.connection import Bus
from eventbus.errors import DeepfaasError, NotFoundError
from eventbus.kv import keys as kv_keys
from eventbus.namespaces import QUALIFIED_NAME_PATTERN
from eventbus.streams import DEPLOYMENTS_KV
from runtimes.errors import ProviderError
from runtimes.placement.placer import Placer
from runtimes.types import RuntimeHandle, RuntimeSpec

log = logging.getLogger(__name__)

MAX_HISTORY: Final = 50
#: (spec, placement constraints and preferences) -> site names, best first
Ranker = Callable[[RuntimeSpec, dict[str, Any]], Awaitable[list[str]]]


class Desired(StrEnum):
    """What the user wants of a deployment."""

    RUNNING = "running"
    RELEASED = "released"


class DeploymentStatus(StrEnum):
    """Where a deployment actually stands."""

    PROVISIONING = "provisioning"
    READY = "ready"
    FAILED = "failed"
    RELEASED = "released"


class HandleRef(BaseModel):
    """A `RuntimeHandle` as stored."""

    site: str
    kind: str
    name: str
    ref: str

    def handle(self) -> RuntimeHandle:
        """The provider's handle."""
        return RuntimeHandle(self.site, self.kind, self.name, self.ref)


class DeploymentRecord(BaseModel):
    """One deployment: desired state, actual state, and the history of placement attempts."""

    name: str = Field(pattern=QUALIFIED_NAME_PATTERN)
    version: int = Field(default=1, ge=1, description="bumps on every update or redeploy")
    desired: Desired = Desired.RUNNING
    spec: RuntimeSpec
    placement: dict[str, Any] = Field(default_factory=dict, description="constraints, prefs")
    source: dict[str, Any] = Field(default_factory=dict, description="template name, inputs")
    status: DeploymentStatus = DeploymentStatus.PROVISIONING
    site: str | None = None
    handle: HandleRef | None = None
    reason: str = ""
    history: list[dict[str, Any]] = Field(default_factory=list)
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))
    updated: datetime = Field(default_factory=lambda: datetime.now(UTC))


class DeploymentStore:
    """The `deployments` KV bucket: one JSON record per deployment name."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def get(self, name: str) -> DeploymentRecord:
        """The record, or `NotFoundError`."""
        kv = await self.bus.kv(DEPLOYMENTS_KV)
        try:
            entry = await kv.get(name)
        except KeyNotFoundError:
            entry = None
        if entry is None or not entry.value:
            raise NotFoundError(f"no deployment {name!r}", deployment=name)
        return DeploymentRecord.model_validate_json(entry.value)

    async def find(self, name: str) -> DeploymentRecord | None:
        """The record, or None."""
        try:
            return await self.get(name)
        except NotFoundError:
            return None

    async def put(self, record: DeploymentRecord) -> DeploymentRecord:
        """Write the record (stamping `updated`)."""
        record = record.model_copy(update={"updated": datetime.now(UTC)})
        kv = await self.bus.kv(DEPLOYMENTS_KV)
        await kv.put(record.name, record.model_dump_json().encode())
        return record

    async def list(self) -> list[DeploymentRecord]:
        """Every record, by name."""
        kv = await self.bus.kv(DEPLOYMENTS_KV)
        keys = await kv_keys(kv)
        found = [await self.find(k) for k in sorted(keys)]
        return [r for r in found if r is not None]


class Deployments:
    """The deployment lifecycle over a store, a placer and a ranker."""

    def __init__(self, store: DeploymentStore, placer: Placer, ranker: Ranker) -> None:
        self.store = store
        self.placer = placer
        self.ranker = ranker

    async def apply(
        self, name: str, spec: RuntimeSpec, placement: dict[str, Any],
        source: dict[str, Any] | None = None,
    ) -> DeploymentRecord:  # fmt: skip
        """Create a deployment, or update it rolling (new ready before the old is released)."""
        old = await self.store.find(name)
        version = old.version + 1 if old is not None else 1
        record = DeploymentRecord(
            name=name, version=version, spec=spec, placement=placement, source=source or {},
            history=list(old.history) if old is not None else [],
            created=old.created if old is not None else datetime.now(UTC),
        )  # fmt: skip
        return await self._place(record, previous=old)

    async def redeploy(self, name: str) -> DeploymentRecord:
        """Place the recorded topology again (a new version; the old runtime goes once ready)."""
        old = await self.store.get(name)
        record = old.model_copy(update={"version": old.version + 1, "desired": Desired.RUNNING})
        return await self._place(record, previous=old)

    async def undeploy(self, name: str) -> DeploymentRecord:
        """Release the runtime (a `runtime.released` event) and keep the record as released."""
        record = await self.store.get(name)
        if record.handle is not None:
            await self.placer.release(name, record.handle.handle(), generation=record.version)
        update = {"desired": Desired.RELEASED, "status": DeploymentStatus.RELEASED,
                  "handle": None, "reason": "undeployed"}  # fmt: skip
        return await self.store.put(record.model_copy(update=update))

    async def reconcile(self) -> list[DeploymentRecord]:
        """Re-place each running deployment whose runtime is gone; released ones stay so."""
        changed: list[DeploymentRecord] = []
        for record in await self.store.list():
            again = await self.reconcile_one(record)
            if again is not None:
                changed.append(again)
        return changed

    async def reconcile_one(self, record: DeploymentRecord) -> DeploymentRecord | None:
        """Re-place one deployment if it should run and its runtime is gone: the new record
        (failed, without a handle, when no site took it), or None when nothing was done."""
        if record.desired is Desired.RELEASED:
            return None
        if record.handle is not None and await self._alive(record.handle.handle()):
            return None
        log.info("deployment %s: runtime gone; placing it again", record.name)
        again = record.model_copy(update={"version": record.version + 1, "handle": None})
        try:
            return await self._place(again, previous=None)
        except DeepfaasError as exc:  # recorded as failed; the others still get their turn
            log.warning("deployment %s: cannot place it again: %s", record.name, exc)
            return await self.store.get(record.name)

    async def _alive(self, handle: RuntimeHandle) -> bool:
        try:
            await self.placer.providers(handle.site).status(handle)
        except DeepfaasError:  # gone, or its site is (no longer) in the sites file
            return False
        return True

    async def _place(
        self, record: DeploymentRecord, previous: DeploymentRecord | None
    ) -> DeploymentRecord:
        record = await self.store.put(
            record.model_copy(update={"status": DeploymentStatus.PROVISIONING, "reason": ""})
        )
        try:
            sites = await self.ranker(record.spec, record.placement)
            placed = await self.placer.place(
                record.name, record.spec, sites, generation=record.version
            )
        except DeepfaasError as exc:  # no eligible site, rank failed, or every site failed
            history = record.history + list(exc.fields.get("attempts", []))
            failed = record.model_copy(update={
                "status": DeploymentStatus.FAILED, "reason": str(exc),
                "history": history[-MAX_HISTORY:],
                # a failed update keeps the old runtime serving
                "handle": previous.handle if previous is not None else None,
                "site": previous.site if previous is not None else None,
            })  # fmt: skip
            await self.store.put(failed)
            raise
        history = record.history + [a.as_dict() for a in placed.attempts]
        h = placed.handle
        ready = record.model_copy(update={
            "status": DeploymentStatus.READY, "site": h.site, "reason": "",
            "handle": HandleRef(site=h.site, kind=h.kind, name=h.name, ref=h.ref),
            "history": history[-MAX_HISTORY:],
        })  # fmt: skip
        ready = await self.store.put(ready)
        if previous is not None and previous.handle is not None:
            old = previous.handle.handle()
            if old != h:
                try:
                    await self.placer.release(record.name, old, generation=previous.version)
                except ProviderError as exc:
                    log.warning("deployment %s: releasing the old runtime: %s", record.name, exc)
        return ready
