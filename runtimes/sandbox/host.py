"""The worker's side of a sandboxed function: one warm runner, its limits, its storage gate.

`SandboxedExecutor` has the executor's shape (``run(body, content_type, ctx) -> Outcome``), so
the worker claims, records and answers exactly as for in-process code; only the run crosses a
pipe into the sandbox. A runner that dies, wedges past a deadline or hits a limit is replaced
by a fresh one; the activations it was running fail with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from eventbus.buckets import BucketOwners
from eventbus.namespaces import namespace_of
from eventbus.storage import Storage
from runtimes.sandbox import wire
from runtimes.sandbox.command import build_command, gpu_devices, readonly_paths
from runtimes.sandbox.gate import StorageGate
from runtimes.sandbox.netns import resolv_conf
from runtimes.sandbox.process import (
    RunnerGoneError,
    RunnerProcess,
    prepare_scratch,
    remove_stale_scratch,
)
from runtimes.sandbox.types import Egress, Network, SandboxLimits
from runtimes.types import ActivationStatus, Context, FunctionSpec
from runtimes.worker.executor import Outcome, error_code

log = logging.getLogger(__name__)
#: how long past its deadline a run may stay unanswered before its runner is replaced
DEADLINE_GRACE_S = 2.0
START_TIMEOUT_S = 30.0


class SandboxFactory:
    """Makes runners for one worker: command line, uid, scratch dirs."""

    def __init__(
        self,
        *,
        root: Path | None,
        uid: int,
        exclude: list[Path],
        limits: SandboxLimits,
        label: str,
        egress: Egress = "isolated",
        deny: Sequence[str] = (),
    ) -> None:
        self.root = root or Path(tempfile.gettempdir()) / "deepfaas-sandbox"
        self.uid = uid
        #: how an `egress` runner reaches out: its own namespace via slirp4netns, or the host's
        self.egress = egress
        #: networks (CIDRs) an isolated `egress` runner may not reach
        self.deny = tuple(deny)
        #: the resolv.conf isolated runners get (written at the first one's start)
        self._resolv: Path | None = None
        self.exclude = exclude
        self.limits = limits
        self.label = label
        self._count = 0
        remove_stale_scratch(self.root)

    async def spawn(self, network: Network) -> RunnerProcess:
        """Start a runner (not yet a function) and wait for its hello."""
        self._count += 1
        name = f"{self.label}-{os.getpid()}-{self._count}"
        scratch = prepare_scratch(self.root, name, self.uid, self.uid)
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": "/scratch",
            "TMPDIR": "/tmp",
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            # no passwd entry exists for the runner's uid; getpass and friends read these
            "USER": "sandbox",
            "LOGNAME": "sandbox",
        }
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        if visible:
            env["CUDA_VISIBLE_DEVICES"] = visible
        isolated = network == "egress" and self.egress == "isolated"
        if isolated and self._resolv is None:
            self._resolv = resolv_conf(self.root)
        info = os.pipe() if isolated else None
        try:
            command = build_command(
                python=sys.executable,
                scratch=scratch,
                network=network,
                tmp_mb=self.limits.tmp_mb,
                readonly=readonly_paths(self.exclude),
                devices=gpu_devices(visible),
                env=env,
                info_fd=None if info is None else info[1],
                resolv=self._resolv if isolated else None,
            )
        except BaseException:
            for fd in info or ():
                os.close(fd)
            raise
        runner = await RunnerProcess.spawn(command, scratch, name, info=info)
        try:
            await runner.ready(START_TIMEOUT_S)
            # before `load`: user code never runs without its network
            await runner.attach_network(self.deny)
        except BaseException:
            await runner.kill()
            raise
        return runner


class SandboxedExecutor:
    """Runs one function's activations in a warm sandboxed runner."""

    def __init__(
        self,
        spec: FunctionSpec,
        factory: SandboxFactory,
        *,
        storage: Storage | None,
        owners: BucketOwners,
        prepared: RunnerProcess | None = None,
    ) -> None:
        self.spec = spec
        self.factory = factory
        self.limits = SandboxLimits(
            memory_mb=spec.memory_mb,
            max_processes=factory.limits.max_processes,
            max_open_files=factory.limits.max_open_files,
            max_file_mb=factory.limits.max_file_mb,
            cpu_s=factory.limits.cpu_s,
            tmp_mb=factory.limits.tmp_mb,
            network=spec.network,
        )
        self.gate = StorageGate(storage, owners, namespace_of(spec.name))
        self.abandoned = 0
        self.load_error: str | None = None
        self.load_ms = 0.0
        self._prepared = prepared
        self._runner: RunnerProcess | None = None
        self._starting: asyncio.Task[RunnerProcess] | None = None
        self._retired: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Have a loaded runner ready (the prepared one when its network matches)."""
        await self._current()

    async def run(self, body: bytes, content_type: str | None, ctx: Context) -> Outcome:
        """Run one activation in the sandbox; a runner that fails it is replaced."""
        started = time.perf_counter()
        try:
            runner = await self._current()
        except RunnerGoneError as exc:
            return Outcome(
                status=ActivationStatus.ERROR, error=f"the sandbox could not start: {exc.reason}"
            )
        ident = runner.next_id()
        header = {
            "op": "run",
            "id": ident,
            "content_type": content_type,
            "ctx": {
                "activation_id": ctx.activation_id,
                "function": ctx.function,
                "version": ctx.version,
                "deadline": ctx.deadline,
                "attempt": ctx.attempt,
                "output": ctx.output,
                "event": wire.dump_event(ctx.event),
            },
        }
        wait = max(0.001, ctx.deadline - time.time()) + DEADLINE_GRACE_S
        try:
            answer, payload = await asyncio.wait_for(
                runner.request(f"run:{ident}", header, body), wait
            )
        except TimeoutError:
            self._retire(runner, "a run did not return by its deadline")
            return Outcome(
                status=ActivationStatus.TIMEOUT,
                error=f"the function ran past its timeout of {self.spec.timeout_s:g} s",
                duration_ms=(time.perf_counter() - started) * 1000,
            )
        except RunnerGoneError as exc:
            self._retire(runner, exc.reason)
            return Outcome(
                status=ActivationStatus.ERROR,
                error=_death_reason(exc.reason, self.limits),
                duration_ms=(time.perf_counter() - started) * 1000,
            )
        ctx.annotations.update(answer.get("annotations") or {})
        outcome = Outcome(
            status=ActivationStatus(answer["status"]),
            result=payload if answer.get("bytes") else answer.get("result"),
            error=answer.get("error"),
            error_code=error_code(answer.get("error_code")),
            error_detail=answer.get("error_detail"),
            logs=list(answer.get("logs") or []),
            start=datetime.fromisoformat(answer["start"]),
            duration_ms=float(answer.get("duration_ms") or 0.0),
            final=bool(answer.get("final")),
        )
        if answer.get("recycle"):
            self._retire(runner, outcome.error or "a limit was hit")
        return outcome

    async def close(self) -> None:
        """Stop the runner and any being replaced."""
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(BaseException):
                await self._starting
        runners = [r for r in (self._runner, self._prepared) if r is not None]
        self._runner = self._prepared = None
        await asyncio.gather(*(r.stop() for r in runners), return_exceptions=True)
        await asyncio.gather(*self._retired, return_exceptions=True)
        await self.gate.close()

    async def _current(self) -> RunnerProcess:
        runner = self._runner
        if runner is not None and runner.alive and not runner.draining:
            return runner
        if self._starting is None or self._starting.done():
            self._starting = asyncio.create_task(self._load_fresh())
        task = self._starting
        runner = await asyncio.shield(task)
        self._runner = runner
        return runner

    async def _load_fresh(self) -> RunnerProcess:
        prepared, self._prepared = self._prepared, None
        if prepared is not None and (not prepared.alive or self.limits.network == "none"):
            # A stem's runner shares the host's network: a `network: none` function needs
            # its own namespace, so it gets a runner of its own.
            await prepared.stop()
            prepared = None
        runner = prepared or await self.factory.spawn(self.limits.network)
        runner.on_frame = self.gate.on_frame
        load = {
            "op": "load",
            "spec": self.spec.model_dump(mode="json"),
            "uid": self.factory.uid,
            "gid": self.factory.uid,
            "limits": {
                "memory_mb": self.limits.memory_mb,
                "max_processes": self.limits.max_processes,
                "max_open_files": self.limits.max_open_files,
                "max_file_mb": self.limits.max_file_mb,
                "cpu_s": self.limits.cpu_s,
                "tmp_mb": self.limits.tmp_mb,
            },
        }
        try:
            answer, _ = await asyncio.wait_for(runner.request("loaded", load), START_TIMEOUT_S)
        except (TimeoutError, RunnerGoneError) as exc:
            await runner.kill()
            reason = exc.reason if isinstance(exc, RunnerGoneError) else "load timed out"
            raise RunnerGoneError(
                f"the function could not be loaded in the sandbox: {reason}"
            ) from exc
        self.load_error = answer.get("error")
        self.load_ms = float(answer.get("load_ms") or 0.0)
        if self.load_error:
            log.error("cannot load %s: %s", self.spec.name, self.load_error)
        runner.loaded = True
        return runner

    def _retire(self, runner: RunnerProcess, reason: str) -> None:
        """Send new runs to a fresh runner; stop this one once its runs are answered."""
        if runner.draining:
            return
        runner.draining = True
        log.warning("replacing the sandbox of %s: %s", self.spec.name, reason)

        async def drain() -> None:
            deadline = time.monotonic() + self.spec.timeout_s + DEADLINE_GRACE_S
            while runner.alive and runner.inflight and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await runner.kill()

        task = asyncio.create_task(drain())
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)


def _death_reason(reason: str, limits: SandboxLimits) -> str:
    if "SIGKILL" in reason:
        return f"{reason}; the function's memory limit is {limits.memory_mb} MiB"
    return reason
