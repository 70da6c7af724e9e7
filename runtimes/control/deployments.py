"""Deployments served by the control plane: placement, providers and records in one process.

The leading controller runs one `DeploymentService`: it owns the `ProviderRegistry` built
from the sites file (so a `local` site's runtimes are the controller's children and live until
they are deleted, whatever happens to the workers that asked for them), answers
`control.deployments.<op>` requests (`runtimes.control.deployments_client`), and reconciles:
at start and every ``deployments_reconcile_s`` it places again each running deployment whose
runtime is gone, trying the sites in the order `rank` gave when it was placed. A deployment
that fails to be placed again is retried with back-off (doubling up to an hour).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import orjson
from nats.aio.msg import Msg
from pydantic import ValidationError

import runtimes
from eventbus.connection import Bus
from eventbus.errors import BusUnavailableError, DeepfaasError, ValidationFailedError
from eventbus.subjects import control_subject
from runtimes.control.deployments_client import (
    DeploymentRequest,
    Ranking,
    error_body,
    error_from,
)
from runtimes.placement.deployments import (
    DeploymentRecord,
    Deployments,
    DeploymentStore,
    Desired,
    Ranker,
)
from runtimes.placement.placer import PlacementError, Placer
from runtimes.placement.settings import PlacementSettings
from runtimes.placement.sites import SitesFile, load_sites
from runtimes.providers.gpus import Gpu
from runtimes.providers.k8s_manifests import ManifestOptions
from runtimes.providers.registry import ProviderOptions, ProviderRegistry
from runtimes.types import RuntimeSpec

log = logging.getLogger(__name__)
ROOT: Final = Path(runtimes.__file__).resolve().parent.parent
MAX_BACKOFF_S: Final = 3600.0


def provider_options(
    settings: PlacementSettings,
    *,
    env: Mapping[str, str],
    gpus: tuple[Gpu, ...] | None = None,
    local_env: Mapping[str, str] | None = None,
    local_auth_env: Mapping[str, Mapping[str, str]] | None = None,
    local_python: str | None = None,
    local_log_dir: Path | None = None,
) -> ProviderOptions:
    """How the sites' providers are built; ``env`` is where credentials references are read."""
    return ProviderOptions(
        env=dict(env),
        secrets_dir=Path(settings.secrets_dir) if settings.secrets_dir else None,
        local_gpus=gpus,
        local_env=dict(local_env or {}),
        local_auth_env=dict(local_auth_env or {}),
        local_python=local_python,
        local_log_dir=local_log_dir,
        local_max_workers=settings.local_max_workers,
        namespace_max_workers=settings.namespace_max_workers,
        kubernetes=ManifestOptions(
            image=settings.kubernetes_image,
            nats_url=settings.kubernetes_nats_url,
            env_secret=settings.kubernetes_worker_secret,
        ),
        kubernetes_ca_file=settings.kubernetes_ca_file,
    )


class DeploymentService:
    """Answers `control.deployments.*` and keeps every running deployment placed."""

    def __init__(self, bus: Bus, registry: ProviderRegistry, settings: PlacementSettings) -> None:
        self.bus = bus
        self.registry = registry
        self.settings = settings
        self.store = DeploymentStore(bus)
        self.placer = Placer(bus, registry.get, ready_timeout_s=settings.ready_timeout_s)
        self._locks: dict[str, asyncio.Lock] = {}
        self._retry: dict[str, tuple[int, float]] = {}  # name -> (failures, not before)
        self._sites_mtime: float | None = None
        self._sub: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Answer requests, and reconcile now and then periodically."""
        self._sub = await self.bus.nc.subscribe(control_subject("deployments"), cb=self._on_request)
        self._loop = asyncio.create_task(self._reconcile_loop(), name="deployments-reconcile")

    async def stop(self) -> None:
        """Stop answering and reconciling (the providers are closed by their owner)."""
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        for task in [*self._tasks, *([self._loop] if self._loop else [])]:
            task.cancel()
        await asyncio.gather(*self._tasks, *([self._loop] if self._loop else []),
                             return_exceptions=True)  # fmt: skip

    # -- requests -----------------------------------------------------------------------------

    async def _on_request(self, msg: Msg) -> None:
        # one task per request: a placement may wait a minute, reads must not wait behind it
        task = asyncio.create_task(self._answer(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, msg: Msg) -> None:
        op = msg.subject.rsplit(".", 1)[-1]
        try:
            request = DeploymentRequest.model_validate_json(msg.data or b"{}")
            reply = await self.handle(op, request)
        except ValidationError as exc:
            reply = {"error": error_body(ValidationFailedError(f"bad {op} request: {exc}"))}
        except DeepfaasError as exc:
            reply = {"error": error_body(exc)}
        except asyncio.CancelledError:  # this controller stops leading: say so, not silence
            if msg.reply:
                stopped = BusUnavailableError(f"the controller stopped during {op}; try again")
                with contextlib.suppress(Exception):
                    await msg.respond(orjson.dumps({"error": error_body(stopped)}))
            raise
        except Exception as exc:  # a request's outer loop: answer, log, keep serving
            log.exception("deployments %s failed", op)
            reply = {"error": {"code": "internal", "message": f"{type(exc).__name__}: {exc}"}}
        if msg.reply:
            await msg.respond(orjson.dumps(reply, default=str))

    async def handle(self, op: str, request: DeploymentRequest) -> dict[str, Any]:
        """Carry out one operation; the reply body."""
        if op == "list":
            return {"records": [_dump(r) for r in await self.store.list()]}
        if op == "get" and request.name:
            return {"record": _dump(await self.store.get(request.name))}
        await self._load_sites()  # the rest needs the sites (SiteConfigError when they are bad)
        if op == "sites":
            sites = self.registry.all_sites()
            return {"sites": [s.model_dump(mode="json", exclude_none=True) for s in sites]}
        if op == "reconcile":
            return {"records": [_dump(r) for r in await self.reconcile(force=True)]}
        name = request.name
        if not name:
            raise ValidationFailedError(f"{op} needs the deployment's name")
        async with self._lock(name):
            if op == "delete":
                record = await self._deployments(None).undeploy(name)
                self._retry.pop(name, None)
            elif op == "create" and request.spec is not None:
                ranking = request.ranking or Ranking()
                placement = {**request.placement, "ranking": ranking.sites}
                record = await self._deployments(ranking).apply(
                    name, request.spec, placement, request.source
                )
            elif op == "redeploy":
                ranking = request.ranking or Ranking()
                old = await self.store.get(name)
                if ranking.error is None:
                    placement = {**old.placement, "ranking": ranking.sites}
                    await self.store.put(old.model_copy(update={"placement": placement}))
                record = await self._deployments(ranking).redeploy(name)
            else:
                raise ValidationFailedError(f"no deployments operation {op!r}")
        return {"record": _dump(record)}

    # -- reconcile ----------------------------------------------------------------------------

    async def reconcile(self, *, force: bool = False) -> list[DeploymentRecord]:
        """Place again each running deployment whose runtime is gone; those placed again.

        Without ``force`` a deployment that failed to be placed waits out its back-off.
        """
        changed: list[DeploymentRecord] = []
        deployments = self._deployments(None)
        for record in await self.store.list():
            if record.desired is Desired.RELEASED:
                continue
            failures, not_before = self._retry.get(record.name, (0, 0.0))
            if not force and time.monotonic() < not_before:
                continue
            async with self._lock(record.name):
                current = await self.store.find(record.name)
                if current is None or current.desired is Desired.RELEASED:
                    continue
                again = await deployments.reconcile_one(_with_ranking(current))
            if again is None:
                continue
            changed.append(again)
            if again.handle is None:
                delay = min(MAX_BACKOFF_S, self.settings.deployments_reconcile_s * 2**failures)
                self._retry[record.name] = (failures + 1, time.monotonic() + delay)
            else:
                self._retry.pop(record.name, None)
        return changed

    async def _reconcile_loop(self) -> None:
        while True:
            try:
                await self._load_sites()
                changed = await self.reconcile()
                if changed:
                    log.info("reconcile placed %d deployment(s) again", len(changed))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop's outer edge: try again next period
                log.warning("reconciling deployments: %s", exc)
            await asyncio.sleep(self.settings.deployments_reconcile_s)

    # -- helpers ------------------------------------------------------------------------------

    async def _load_sites(self) -> None:
        """Read the sites file when it changed (`SiteConfigError` when it is bad)."""
        path = Path(self.settings.sites_file)
        path = path if path.is_absolute() else ROOT / path
        mtime = path.stat().st_mtime if path.exists() else 0.0
        if mtime == self._sites_mtime:
            return
        sites: SitesFile = load_sites(path)
        await self.registry.update_sites(sites)
        self._sites_mtime = mtime

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _deployments(self, ranking: Ranking | None) -> Deployments:
        return Deployments(self.store, self.placer, _given(ranking) if ranking else self._recorded)

    async def _recorded(self, spec: RuntimeSpec, placement: dict[str, Any]) -> list[str]:
        """The ranking a deployment was placed by (`rank` is asked again only by `deploy`)."""
        ranked = [str(s) for s in placement.get("ranking") or ()]
        if not ranked:
            raise PlacementError(
                f"no ranked site is recorded for runtime {spec.name!r}: deploy it again",
                runtime=spec.name,
            )
        return ranked


def _with_ranking(record: DeploymentRecord) -> DeploymentRecord:
    """A record stored before rankings were recorded gets the sites its history tried (the
    last that took it first): they were ranked under its constraints."""
    if "ranking" in record.placement:
        return record
    took = [a.get("site") for a in reversed(record.history) if a.get("ok")]
    tried = [a.get("site") for a in record.history]
    sites = list(dict.fromkeys(str(s) for s in [*took, *tried] if s))
    return record.model_copy(update={"placement": {**record.placement, "ranking": sites}})


def _given(ranking: Ranking) -> Ranker:
    async def rank(spec: RuntimeSpec, placement: dict[str, Any]) -> list[str]:
        if ranking.error is not None:
            raise error_from(ranking.error)
        return list(ranking.sites)

    return rank


def _dump(record: DeploymentRecord) -> dict[str, Any]:
    return record.model_dump(mode="json")
