"""The `local` provider: worker processes on this machine, restarted when they die.

CPU workers come from the prewarmed pool (`runtimes.providers.pool`) when it has a stem, else
they are spawned. GPU workers are spawned with their own ``CUDA_VISIBLE_DEVICES`` and only when
a GPU of the asked model is free: otherwise the runtime stays *pending* with a "no GPU" reason
and nothing runs on the CPU in its place.

A site runs no more workers than its budget (`runtimes.providers.budget`): a runtime past it is
pending with the reason, its invocations waiting, then failing with it, as a GPU runtime's do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from eventbus.backoff import Backoff
from eventbus.namespaces import namespace_of
from runtimes.catalog.plugins import plugin_modules
from runtimes.errors import CapacityError, ProvisioningError
from runtimes.providers.budget import WorkerBudget, held_by_namespace
from runtimes.providers.forkserver import ForkError, ForkServer
from runtimes.providers.gpus import Gpu, gpu_inventory
from runtimes.providers.pool import StemPool, WorkerProcess, spawn_worker, stop_process
from runtimes.settings import ControllerSettings
from runtimes.types import RuntimeHandle, RuntimeSpec, RuntimeStatus

log = logging.getLogger(__name__)
EXIT_LOAD_FAILED = 3
#: how long the prewarmed pool waits for a starting fork server before spawning its stems
STEM_WAIT_S = 30.0
#: how long a function whose workers keep failing waits before the next start
RESTART_BACKOFF = Backoff(0.5, 30.0)
__all__ = ["EXIT_LOAD_FAILED", "Gpu", "LocalProvider", "parse_announcement"]


@dataclass
class _Instance:
    process: WorkerProcess
    started: float
    gpus: tuple[int, ...] = ()
    ready: bool = False
    stopping: bool = False
    prewarmed: bool = False


@dataclass
class _Runtime:
    spec: RuntimeSpec
    replicas: int
    instances: list[_Instance] = field(default_factory=list)
    failures: int = 0
    retry_at: float = 0.0
    last_error: str = ""
    pending: str = ""
    #: since when (monotonic) it has wanted a worker the budget had no room for
    short_since: float | None = None


class LocalProvider:
    """Starts `python -m runtimes` worker processes; keeps each runtime at its replica count."""

    kind = "local"

    def __init__(
        self,
        site: str = "local",
        *,
        env: dict[str, str] | None = None,
        python: str | None = None,
        log_dir: Path | None = None,
        gpus: list[Gpu] | None = None,
        supervise_s: float = 0.2,
        prewarm: int = 0,
        auth_env: Mapping[str, Mapping[str, str]] | None = None,
        fork_server: bool = False,
        preload_models: bool = False,
        max_workers: int | None = None,
        namespace_max_workers: int | None = None,
    ) -> None:
        self.site = site
        self.budget = WorkerBudget.of(site, max_workers, namespace_max_workers)
        self.env = dict(env or {})
        # bus credentials (env) of a function's workers; key "" for every other function
        self.auth_env = {name: dict(value) for name, value in (auth_env or {}).items()}
        self.python = python or sys.executable
        self.log_dir = log_dir
        self.gpus = gpu_inventory(None) if gpus is None else gpus
        self.supervise_s = supervise_s
        self.pool: StemPool | None = None
        if prewarm > 0:
            base = {
                **os.environ,
                **self.env,
                **self.auth_env.get("", {}),
                "DEEPFAAS_PARENT_PID": str(os.getpid()),
            }
            self.pool = StemPool(prewarm, self.python, base, log_dir, site)
        self._runtimes: dict[str, _Runtime] = {}
        #: workers of released runtimes, still stopping: (function, instance)
        self._draining: list[tuple[str, _Instance]] = []
        self._supervisor: asyncio.Task[None] | None = None
        self.preload_models = preload_models
        # CPU workers and stems are forked from it once it is ready (`forkserver`)
        self.forks: ForkServer | None = self._new_fork_server() if fork_server else None
        self._forks_started = 0.0
        if self.pool is not None and self.forks is not None:
            self.pool.spawner = self._spawn

    @classmethod
    def from_settings(
        cls,
        settings: ControllerSettings,
        *,
        env: dict[str, str],
        log_dir: Path | None,
        auth_env: Mapping[str, Mapping[str, str]] | None = None,
    ) -> LocalProvider:
        """The provider a controller process runs: pool size and GPU inventory from settings."""
        return cls(
            env=env,
            auth_env=auth_env,
            log_dir=log_dir,
            python=settings.worker_python,
            gpus=gpu_inventory(settings.gpus),
            prewarm=settings.prewarm,
            fork_server=settings.fork_server,
            preload_models=settings.preload_models,
            max_workers=settings.local_max_workers,
            namespace_max_workers=settings.namespace_max_workers,
        )

    # -- Provider protocol ------------------------------------------------------------------

    async def provision(self, spec: RuntimeSpec, *, pending_ok: bool = False) -> RuntimeHandle:
        """Register the runtime and start its minimum replicas.

        A GPU runtime this site can never hold, or a new one with a minimum that the worker
        budget has no room for now, raises `CapacityError` (so placement tries the next site),
        unless ``pending_ok``: then it is kept pending, visibly, for the controller.
        """
        if spec.gpu.count > len(self._matching_gpus(spec)) and not pending_ok:
            raise CapacityError(self._no_gpu_reason(spec), site=self.site, runtime=spec.name)
        if not pending_ok and spec.min_scale and spec.name not in self._runtimes:
            full = self.budget.refusal(spec.function, self._held())
            if full:  # placement tries the next site
                raise CapacityError(full, site=self.site, runtime=spec.name)
        runtime = self._runtimes.get(spec.name)
        if runtime is None:
            runtime = _Runtime(spec=spec, replicas=spec.min_scale)
            self._runtimes[spec.name] = runtime
        else:
            runtime.spec = spec
        self._ensure_supervisor()
        self._converge(runtime, self._held())
        return RuntimeHandle(site=self.site, kind=self.kind, name=spec.name, ref=spec.name)

    async def status(self, handle: RuntimeHandle) -> RuntimeStatus:
        """Desired replicas, live workers, those that announced readiness, and why not ready."""
        runtime = self._get(handle)
        live = [i for i in runtime.instances if i.process.poll() is None and not i.stopping]
        return RuntimeStatus(
            desired=runtime.replicas,
            ready=sum(1 for i in live if i.ready),
            message=runtime.pending or runtime.last_error,
            workers=len(live),
            pending=runtime.pending,
            gpus=sorted(g for i in live for g in i.gpus),
        )

    async def scale(self, handle: RuntimeHandle, replicas: int) -> None:
        """Start or stop workers to reach ``replicas`` (bounded by the spec's max_scale)."""
        runtime = self._get(handle)
        runtime.replicas = max(0, min(replicas, runtime.spec.max_scale))
        self._converge(runtime, self._held())

    async def release(self, handle: RuntimeHandle) -> None:
        """Stop every worker gracefully (SIGTERM, then SIGKILL after a grace period)."""
        runtime = self._runtimes.pop(handle.ref, None)
        if runtime is None:
            return
        # they hold their memory (and GPUs) until gone: still counted meanwhile
        draining = [(runtime.spec.function, i) for i in runtime.instances]
        self._draining.extend(draining)
        try:
            await asyncio.gather(*(self._stop(i) for _, i in draining))
        finally:
            self._draining = [d for d in self._draining if d not in draining]

    # -- local extras -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start supervising and fill the prewarmed pool."""
        self._ensure_supervisor()
        self._ensure_fork_server()
        if self.pool is not None and self._stems_may_start():
            self.pool.refill()

    def mark_ready(self, pid: int) -> None:
        """A worker (or a stem) said it is ready; the controller relays `control.*` messages."""
        if self.pool is not None and self.pool.mark_ready(pid):
            return
        for runtime in self._runtimes.values():
            for inst in runtime.instances:
                if inst.process.pid == pid:
                    inst.ready = True
                    runtime.failures = 0
                    runtime.last_error = ""

    def instances(self, handle: RuntimeHandle) -> list[dict[str, Any]]:
        """The runtime's worker processes, for the instances API."""
        runtime = self._get(handle)
        return [
            {
                "pid": i.process.pid,
                "ready": i.ready,
                "stopping": i.stopping,
                "uptime_s": round(time.time() - i.started, 3),
                "gpus": list(i.gpus),
                "version": runtime.spec.function_version,
                "prewarmed": i.prewarmed,
            }
            for i in runtime.instances
            if i.process.poll() is None
        ]

    def describe(self, handle: RuntimeHandle) -> dict[str, Any]:
        """Replica counts and why the runtime is not at them (pending GPU, failing loads)."""
        runtime = self._get(handle)
        live = [i for i in runtime.instances if i.process.poll() is None and not i.stopping]
        return {
            "desired": runtime.replicas,
            "workers": len(live),
            "ready": sum(1 for i in live if i.ready),
            "pending": runtime.pending,
            "last_error": runtime.last_error,
            "gpus": sorted(g for i in live for g in i.gpus),
        }

    def prewarmed(self) -> dict[str, int] | None:
        """The prewarmed pool's size and ready stems; None without a pool."""
        return None if self.pool is None else {"size": self.pool.size, "ready": self.pool.ready}

    def replicas(self, handle: RuntimeHandle) -> int:
        """The replica count asked for now."""
        return self._get(handle).replicas

    async def close(self) -> None:
        """Release every runtime, stop the stems and stop supervising."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        for name in list(self._runtimes):
            await self.release(RuntimeHandle(self.site, self.kind, name, name))
        if self.pool is not None:
            await self.pool.close()
        if self.forks is not None:
            await asyncio.to_thread(self.forks.close)

    # -- internals --------------------------------------------------------------------------

    def _get(self, handle: RuntimeHandle) -> _Runtime:
        runtime = self._runtimes.get(handle.ref)
        if runtime is None:
            raise ProvisioningError(
                f"no runtime {handle.ref!r} on site {self.site!r}", site=self.site
            )
        return runtime

    def _matching_gpus(self, spec: RuntimeSpec) -> list[Gpu]:
        want = (spec.gpu.model or "").lower()
        return [g for g in self.gpus if not want or want in g.model.lower()]

    def _ensure_supervisor(self) -> None:
        if self._supervisor is None or self._supervisor.done():
            self._supervisor = asyncio.create_task(self._supervise(), name="local-supervisor")

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(self.supervise_s)
            self._ensure_fork_server()
            self._draining = [d for d in self._draining if d[1].process.poll() is None]
            runtimes = list(self._runtimes.values())
            for runtime in runtimes:
                self._reap(runtime)
            # Room freed goes first to a runtime with no worker at all, then to the one that has
            # waited longest for it: not to whichever was registered first.
            held = self._held()  # counted once a pass: a tenant may have 1,000 runtimes waiting
            for runtime in sorted(runtimes, key=_claim_order):
                self._converge(runtime, held)
            if self.pool is not None and self._stems_may_start():
                try:
                    self.pool.refill()
                except ProvisioningError as exc:
                    log.warning("cannot refill the prewarmed pool: %s", exc)

    def _reap(self, runtime: _Runtime) -> None:
        for inst in list(runtime.instances):
            code = inst.process.poll()
            if code is None:
                continue
            runtime.instances.remove(inst)
            if inst.stopping:
                continue
            runtime.failures += 1
            delay = RESTART_BACKOFF.delay(runtime.failures)
            runtime.retry_at = time.time() + delay
            runtime.last_error = (
                "the function failed to load"
                if code == EXIT_LOAD_FAILED
                else f"worker exited with {code}"
            )
            log.warning(
                "%s: worker %d exited with %s; restarting in %.1f s",
                runtime.spec.name,
                inst.process.pid,
                code,
                delay,
            )

    def _converge(self, runtime: _Runtime, held: Counter[str]) -> None:
        """Start or stop workers towards ``runtime.replicas``; counts those started in ``held``."""
        live = [i for i in runtime.instances if not i.stopping]
        runtime.pending = ""
        short = False
        if len(live) < runtime.replicas and time.time() >= runtime.retry_at:
            for _ in range(runtime.replicas - len(live)):
                runtime.pending = self.budget.refusal(
                    runtime.spec.function, held
                ) or self._queued_behind(runtime, held)
                if runtime.pending:
                    short = True
                    if runtime.short_since is None:
                        runtime.short_since = time.monotonic()
                    break
                gpus = self._free_gpus(runtime.spec)
                if gpus is None:
                    runtime.pending = self._no_gpu_reason(runtime.spec)
                    break
                runtime.instances.append(self._start(runtime.spec, gpus))
                held[namespace_of(runtime.spec.function)] += 1
        elif len(live) > runtime.replicas:
            # Stop the youngest first; the oldest are warm.
            for inst in sorted(live, key=lambda i: i.started, reverse=True)[
                : len(live) - runtime.replicas
            ]:
                inst.stopping = True
                asyncio.get_running_loop().create_task(self._stop(inst))
        if not short:
            runtime.short_since = None

    def _start(self, spec: RuntimeSpec, gpus: tuple[int, ...]) -> _Instance:
        auth = self.auth_env.get(spec.function)
        if not gpus and self.pool is not None and auth is None:  # stems hold generic credentials
            stem = self.pool.assign(spec.function, spec.function_version)
            if stem is not None:
                log.info("%s: prewarmed worker pid %d assigned", spec.name, stem.process.pid)
                return _Instance(process=stem.process, started=stem.started, prewarmed=True)
        # Never the function's own env (`spec.env`): a tenant could name DEEPFAAS_SANDBOX
        # or LD_PRELOAD there. The worker reads it from the spec and hands it to the sandbox.
        env = {**os.environ, **self.env, **(auth or self.auth_env.get("", {}))}
        env["DEEPFAAS_FUNCTION"] = spec.function
        env["DEEPFAAS_PARENT_PID"] = str(os.getpid())
        env["DEEPFAAS_VERSION"] = str(spec.function_version)
        env["DEEPFAAS_STEM"] = "false"
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
        env["DEEPFAAS_SPAWNED_AT"] = repr(time.time())  # init time counts from here
        log_path = self.log_dir / f"{spec.name}.log" if self.log_dir is not None else None
        process: WorkerProcess
        if gpus:  # CUDA_VISIBLE_DEVICES must hold before anything imports CUDA
            process = spawn_worker(self.python, env, log_path, site=self.site)
        else:
            process = self._spawn(env, log_path, False)
        log.info("%s: started worker pid %d (gpus %s)", spec.name, process.pid, list(gpus))
        return _Instance(process=process, started=time.time(), gpus=gpus)

    def _new_fork_server(self) -> ForkServer:
        base = {**os.environ, **self.env}
        log_path = self.log_dir / "fork-server.log" if self.log_dir is not None else None
        modules = preloads(base, models=self.preload_models)
        return ForkServer(self.python, base, log_path=log_path, preload=modules)

    def _stems_may_start(self) -> bool:
        """Stems wait for the fork server (a forked stem shares its pages) for up to
        `STEM_WAIT_S` after it started; without one, or past that, they are spawned."""
        forks = self.forks
        return (
            forks is None
            or forks.ready
            or not forks.alive
            or time.monotonic() - self._forks_started > STEM_WAIT_S
        )

    def _ensure_fork_server(self) -> None:
        """Start the fork server, or a new one when it died (at most every 5 s)."""
        if self.forks is None or self.forks.alive or time.monotonic() - self._forks_started < 5:
            return
        if self.forks.process is not None:
            log.warning("the fork server exited (%s); starting another", self.forks.process.poll())
            self.forks.close()  # its workers keep running; they are watched through pidfds
            self.forks = self._new_fork_server()
        self._forks_started = time.monotonic()
        try:
            self.forks.start()
        except OSError as exc:
            log.warning("cannot start the fork server (workers are spawned): %s", exc)

    def _spawn(self, env: Mapping[str, str], log_path: Path | None, stdin: bool) -> WorkerProcess:
        """A CPU worker forked from the fork server when it is ready, else spawned."""
        if self.forks is not None and self.forks.ready:
            try:
                return self.forks.fork(env, log_path, stdin=stdin)
            except ForkError as exc:
                log.warning("spawning instead of forking: %s", exc)
        return spawn_worker(self.python, env, log_path, site=self.site, stdin=stdin)

    def _held(self) -> Counter[str]:
        """Workers by namespace, those still stopping too (they hold their memory until gone)."""
        running = [r.spec.function for r in self._runtimes.values() for _ in r.instances]
        return held_by_namespace(running + [f for f, _ in self._draining])

    def _queued_behind(self, runtime: _Runtime, held: Counter[str]) -> str:
        """Why ``runtime`` leaves the room there is to one that has waited longer for it and can
        take it now (the supervisor gives it there next), or ""."""
        if runtime.short_since is not None and not runtime.instances:
            return ""  # itself waiting, with no worker: first in line
        for other in self._runtimes.values():
            if other is runtime or other.short_since is None:
                continue
            if runtime.short_since is not None and other.short_since >= runtime.short_since:
                continue
            if not self.budget.refusal(other.spec.function, held):
                # no name: the other may be another namespace's
                return "waiting for its turn: another function has waited longer for a worker"
        return ""

    def _free_gpus(self, spec: RuntimeSpec) -> tuple[int, ...] | None:
        """GPU indexes for one more worker, or None when not enough of the model are free."""
        if spec.gpu.count <= 0:
            return ()
        free = [g.index for g in self._matching_gpus(spec) if g.index not in self._used_gpus()]
        return tuple(free[: spec.gpu.count]) if len(free) >= spec.gpu.count else None

    def _used_gpus(self) -> set[int]:
        held = [i for r in self._runtimes.values() for i in r.instances]
        return {g for i in held + [i for _, i in self._draining] for g in i.gpus}

    def _no_gpu_reason(self, spec: RuntimeSpec) -> str:
        matching = self._matching_gpus(spec)
        used = self._used_gpus()
        free = sum(1 for g in matching if g.index not in used)
        return (
            f"no GPU free: {spec.gpu.count} x {spec.gpu.model or 'any model'} asked; "
            f"site {self.site!r} has {len(matching)} such GPU(s), {free} free"
        )

    async def _stop(self, inst: _Instance, grace: float = 35.0) -> None:
        inst.stopping = True
        await stop_process(inst.process, grace)


def _claim_order(runtime: _Runtime) -> tuple[bool, float]:
    """Who gets room first: a runtime with no worker, then the one short for longest."""
    waited = runtime.short_since if runtime.short_since is not None else float("inf")
    return (bool(runtime.instances), waited)


def preloads(env: Mapping[str, str], *, models: bool = False) -> str:
    """Modules the fork server imports besides the worker: the S3 client when storage is S3,
    the installed model plug-ins when ``models``, and the stems' `DEEPFAAS_PRELOAD` (e.g.
    numpy), comma-separated."""
    modules = []
    if env.get("DEEPFAAS_STORAGE_BACKEND", "local") != "local":
        modules.append("eventbus.storage.s3")
    if models:
        modules += plugin_modules()
    try:
        extra = orjson.loads(env.get("DEEPFAAS_PRELOAD") or "[]")
    except orjson.JSONDecodeError:
        extra = []
    modules += [str(m) for m in extra] if isinstance(extra, list) else []
    return ",".join(modules)


def parse_announcement(data: bytes) -> dict[str, Any]:
    """A worker's `control.*` message body."""
    value = orjson.loads(data)
    return value if isinstance(value, dict) else {}
