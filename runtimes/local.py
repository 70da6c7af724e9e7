"""The `local` provider: worker processes on this machine, restarted when they die."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from runtimes.errors import CapacityError, ProvisioningError
from runtimes.types import RuntimeHandle, RuntimeSpec, RuntimeStatus

log = logging.getLogger(__name__)
EXIT_LOAD_FAILED = 3


@dataclass(frozen=True)
class Gpu:
    """One GPU of this machine, as nvidia-smi reports it."""

    index: int
    model: str
    memory_mb: int


def discover_gpus(nvidia_smi: str | None = None) -> list[Gpu]:
    """GPUs visible through nvidia-smi; none when it is absent or fails."""
    exe = nvidia_smi or shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3 and parts[0].isdigit():
            gpus.append(Gpu(int(parts[0]), parts[1], int(float(parts[2] or 0))))
    return gpus


@dataclass
class _Instance:
    process: subprocess.Popen[bytes]
    started: float
    gpus: tuple[int, ...] = ()
    ready: bool = False
    stopping: bool = False


@dataclass
class _Runtime:
    spec: RuntimeSpec
    replicas: int
    instances: list[_Instance] = field(default_factory=list)
    failures: int = 0
    retry_at: float = 0.0
    last_error: str = ""


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
    ) -> None:
        self.site = site
        self.env = dict(env or {})
        self.python = python or sys.executable
        self.log_dir = log_dir
        self.gpus = discover_gpus() if gpus is None else gpus
        self.supervise_s = supervise_s
        self._runtimes: dict[str, _Runtime] = {}
        self._supervisor: asyncio.Task[None] | None = None

    # -- Provider protocol ------------------------------------------------------------------

    async def provision(self, spec: RuntimeSpec) -> RuntimeHandle:
        """Register the runtime and start its minimum replicas."""
        if spec.gpu.count > len(self._matching_gpus(spec)):
            raise CapacityError(
                f"site {self.site!r} has {len(self._matching_gpus(spec))} GPU(s) of model "
                f"{spec.gpu.model or 'any'}; {spec.gpu.count} asked",
                site=self.site,
                runtime=spec.name,
            )
        runtime = self._runtimes.get(spec.name)
        if runtime is None:
            runtime = _Runtime(spec=spec, replicas=spec.min_scale)
            self._runtimes[spec.name] = runtime
        else:
            runtime.spec = spec
        self._ensure_supervisor()
        self._converge(runtime)
        return RuntimeHandle(site=self.site, kind=self.kind, name=spec.name, ref=spec.name)

    async def status(self, handle: RuntimeHandle) -> RuntimeStatus:
        """Desired replicas and those whose worker announced readiness."""
        runtime = self._get(handle)
        ready = sum(1 for i in runtime.instances if i.ready and not i.stopping)
        return RuntimeStatus(desired=runtime.replicas, ready=ready, message=runtime.last_error)

    async def scale(self, handle: RuntimeHandle, replicas: int) -> None:
        """Start or stop workers to reach ``replicas`` (bounded by the spec's max_scale)."""
        runtime = self._get(handle)
        runtime.replicas = max(0, min(replicas, runtime.spec.max_scale))
        self._converge(runtime)

    async def release(self, handle: RuntimeHandle) -> None:
        """Stop every worker gracefully (SIGTERM, then SIGKILL after a grace period)."""
        runtime = self._runtimes.pop(handle.ref, None)
        if runtime is None:
            return
        await asyncio.gather(*(self._stop(i) for i in runtime.instances))

    # -- local extras -----------------------------------------------------------------------

    def mark_ready(self, pid: int) -> None:
        """A worker said it is ready (the controller relays `control.ready` messages)."""
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
            }
            for i in runtime.instances
            if i.process.poll() is None
        ]

    def replicas(self, handle: RuntimeHandle) -> int:
        """The replica count asked for now."""
        return self._get(handle).replicas

    async def close(self) -> None:
        """Release every runtime and stop supervising."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        for name in list(self._runtimes):
            await self.release(RuntimeHandle(self.site, self.kind, name, name))

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
            for runtime in list(self._runtimes.values()):
                self._reap(runtime)
                self._converge(runtime)

    def _reap(self, runtime: _Runtime) -> None:
        for inst in list(runtime.instances):
            code = inst.process.poll()
            if code is None:
                continue
            runtime.instances.remove(inst)
            if inst.stopping:
                continue
            runtime.failures += 1
            delay = min(30.0, 0.5 * 2 ** min(runtime.failures - 1, 6))
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

    def _converge(self, runtime: _Runtime) -> None:
        live = [i for i in runtime.instances if not i.stopping]
        if len(live) < runtime.replicas and time.time() >= runtime.retry_at:
            for _ in range(runtime.replicas - len(live)):
                runtime.instances.append(self._start(runtime.spec))
        elif len(live) > runtime.replicas:
            # Stop the youngest first; the oldest are warm.
            for inst in sorted(live, key=lambda i: i.started, reverse=True)[
                : len(live) - runtime.replicas
            ]:
                inst.stopping = True
                asyncio.get_running_loop().create_task(self._stop(inst))

    def _start(self, spec: RuntimeSpec) -> _Instance:
        env = {**os.environ, **self.env, **spec.env}
        env["DEEPFAAS_FUNCTION"] = spec.function
        env["DEEPFAAS_PARENT_PID"] = str(os.getpid())
        env["DEEPFAAS_VERSION"] = str(spec.function_version)
        gpus = self._assign_gpus(spec)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
        out: Any = subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = (self.log_dir / f"{spec.name}.log").open("ab")
        try:
            process = subprocess.Popen(
                [self.python, "-m", "runtimes"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise ProvisioningError(f"cannot start a worker: {exc}", site=self.site) from exc
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        log.info("%s: started worker pid %d", spec.name, process.pid)
        return _Instance(process=process, started=time.time(), gpus=gpus)

    def _assign_gpus(self, spec: RuntimeSpec) -> tuple[int, ...]:
        if spec.gpu.count <= 0:
            return ()
        used = {g for r in self._runtimes.values() for i in r.instances for g in i.gpus}
        free = [g.index for g in self._matching_gpus(spec) if g.index not in used]
        if len(free) < spec.gpu.count:
            # Over-subscribe rather than run a GPU function on the CPU silently.
            free = [g.index for g in self._matching_gpus(spec)]
        return tuple(free[: spec.gpu.count])

    async def _stop(self, inst: _Instance, grace: float = 35.0) -> None:
        inst.stopping = True
        if inst.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            inst.process.terminate()
        deadline = time.monotonic() + grace
        while inst.process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if inst.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                inst.process.kill()
            await asyncio.to_thread(inst.process.wait)


def parse_announcement(data: bytes) -> dict[str, Any]:
    """A worker's `control.*` message body."""
    value = orjson.loads(data)
    return value if isinstance(value, dict) else {}
