"""Entry point of a worker process: settings, connection, the function, signals.

A worker started with ``DEEPFAAS_STEM=true`` is a stem cell of the prewarmed pool: it does
everything that needs no function first (imports, bus, storage, KV buckets), says so on
``control.stem``, then waits for one JSON line on stdin naming the function to become.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import signal
import sys
import time
from typing import Any

import orjson

from eventbus import loop as event_loop
from eventbus.buckets import BucketOwners
from eventbus.connection import Bus
from eventbus.storage import Storage
from eventbus.storage.settings import create_storage
from eventbus.streams import ACTIVATIONS_KV, FUNCTIONS_KV, ensure_layout
from eventbus.subjects import CONTROL_STEM
from runtimes.errors import FunctionLoadError
from runtimes.sandbox import SandboxLimits, is_trusted
from runtimes.sandbox.host import SandboxedExecutor, SandboxFactory
from runtimes.sandbox.process import RunnerGoneError, RunnerProcess
from runtimes.sandbox.types import SandboxUnavailableError
from runtimes.settings import WorkerSettings
from runtimes.specs import FunctionRegistry
from runtimes.types import FunctionSpec
from runtimes.worker.executor import Executor, FunctionExecutor
from runtimes.worker.loader import failing_function, load_function
from runtimes.worker.service import Worker

log = logging.getLogger("deepfaas.worker")
EXIT_RESTART = 75
EXIT_BAD_SETTINGS = 2
LOG_FORMAT = "%(asctime)s worker[{name}] %(levelname)s %(name)s: %(message)s"


async def serve(settings: WorkerSettings, started: float) -> int:
    """Run a worker until SIGTERM/SIGINT; the exit code tells the provider what happened."""
    factory = sandbox_factory(settings) if settings.sandbox else None
    early: asyncio.Task[RunnerProcess] | None = None
    trusted = _names(settings.trusted_functions)
    if factory is not None and not settings.stem and settings.function not in trusted:
        # The runner starts while this process connects: a spawned worker's cold start pays
        # for one of the two, not both.
        early = asyncio.create_task(factory.spawn("egress"))
    bus = await Bus.connect(
        settings.nats_url,
        name=f"worker-{settings.function or 'stem'}",
        prefix=settings.event_prefix,
        auth=settings.bus_auth(),
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    owners = BucketOwners(bus)
    prepared: RunnerProcess | None = None
    try:
        await ensure_layout(bus.js)
        storage: Storage | None = None
        if settings.stem:
            storage = _open_storage(settings)
            _preload(settings.preload)
            await bus.kv(FUNCTIONS_KV)
            await bus.kv(ACTIVATIONS_KV)
            if factory is not None:
                # The stem's runner waits in its sandbox too: a warm start crosses no exec.
                prepared = await factory.spawn("egress")
            await owners.start()
            assignment = await _wait_for_assignment(bus, settings, stop)
            if assignment is None:
                if storage is not None:
                    await storage.close()
                if prepared is not None:
                    await prepared.stop()
                return 0
            settings, started = _become(settings, assignment)
        spec = await FunctionRegistry(bus).get(settings.function)
        if settings.version is not None and spec.version != settings.version:
            log.info(
                "serving %s v%d (v%d was asked; the newest wins)",
                spec.name,
                spec.version,
                settings.version,
            )
        if storage is None:
            storage = _open_storage(settings)
        if early is not None:
            try:
                prepared = await early
            except (RunnerGoneError, SandboxUnavailableError) as exc:
                log.warning("the early sandbox did not start (trying again): %s", exc)
            early = None
        in_process = factory is None or is_trusted(spec, _names(settings.trusted_functions))
        executor: FunctionExecutor
        if in_process:
            if prepared is not None:
                await prepared.stop()
                prepared = None
            executor = _in_process(spec)
        else:
            assert factory is not None
            await owners.start()
            executor = SandboxedExecutor(
                spec, factory, storage=storage, owners=owners, prepared=prepared
            )
            prepared = None
            await executor.start()
        worker = Worker(
            bus, spec, executor, settings, started=started, storage=storage, trusted=in_process
        )
        # what a spawned worker imported (a GPU framework, say); no pass first: on its clock
        event_loop.freeze_startup(collect=False)
        await worker.start()
        waiter = asyncio.create_task(worker.wait_stopped())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        restart = waiter.done() and not stop.is_set() and not worker.orphaned
        await worker.stop()
        waiter.cancel()
        stopper.cancel()
        return EXIT_RESTART if restart else 0
    finally:
        if early is not None:
            early.cancel()
            with contextlib.suppress(BaseException):
                prepared = await early
        if prepared is not None:
            await prepared.stop()
        await owners.stop()
        await bus.close()


def _names(text: str) -> set[str]:
    return {name.strip() for name in text.split(",") if name.strip()}


def sandbox_factory(settings: WorkerSettings) -> SandboxFactory:
    """Runners of this worker: its uid, the limits of the settings, never the data dir."""
    exclude = [settings.data_dir, settings.storage_root or settings.data_dir / "storage"]
    if settings.sandbox_dir is not None:
        exclude.append(settings.sandbox_dir)
    return SandboxFactory(
        root=settings.sandbox_dir,
        # a live pid is unique, so is the uid: RLIMIT_NPROC counts per uid (pid_max may be 2**22)
        uid=settings.sandbox_uid_base + os.getpid(),
        exclude=exclude,
        limits=SandboxLimits(
            max_processes=settings.sandbox_max_processes,
            max_open_files=settings.sandbox_max_open_files,
            max_file_mb=settings.sandbox_max_file_mb,
            cpu_s=settings.sandbox_cpu_s,
            tmp_mb=settings.sandbox_tmp_mb,
        ),
        label=settings.function or "stem",
        egress=settings.sandbox_egress,
        deny=settings.sandbox_networks_denied(),
    )


def _in_process(spec: FunctionSpec) -> Executor:
    """The function loaded here: the platform's own built-ins, or everything when the
    sandbox is off (a trusted single-user machine)."""
    os.environ.update(spec.env)
    try:
        loaded = load_function(spec)
    except FunctionLoadError as exc:
        # Serve anyway: every invocation then fails with the reason instead of waiting.
        log.error("cannot load %s: %s", spec.name, exc)
        loaded = failing_function(spec, exc)
    return Executor(loaded, threads=spec.concurrency + 2)


def _open_storage(settings: WorkerSettings) -> Storage | None:
    try:
        return create_storage(settings)
    except Exception as exc:  # functions without storage still run
        log.warning("no object store for this worker: %s", exc)
        return None


def _preload(modules: list[str]) -> None:
    """Import what the functions this stem may become will need (e.g. numpy, torch)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            log.warning("stem cannot preload %s: %s", module, exc)


async def _wait_for_assignment(
    bus: Bus, settings: WorkerSettings, stop: asyncio.Event
) -> dict[str, Any] | None:
    """The provider's assignment line from stdin; None on EOF (provider gone) or a signal."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer
    )
    line_task = asyncio.create_task(reader.readline())
    stop_task = asyncio.create_task(stop.wait())
    body = orjson.dumps({"pid": os.getpid(), "worker": settings.worker_id})
    try:
        while not (line_task.done() or stop_task.done()):
            with contextlib.suppress(Exception):
                await bus.nc.publish(CONTROL_STEM, body)
            await asyncio.wait(
                {line_task, stop_task},
                timeout=settings.heartbeat_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
    finally:
        stop_task.cancel()
        if not line_task.done():
            line_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await line_task
        transport.close()
    if line_task.cancelled() or not line_task.result():
        return None
    value = orjson.loads(line_task.result())
    return value if isinstance(value, dict) else None


def _become(settings: WorkerSettings, assignment: dict[str, Any]) -> tuple[WorkerSettings, float]:
    """Settings of the function a stem was told to serve, and when it was told (init start).

    The function's own env is not applied here: it comes from its spec, into its sandbox
    (or, in-process, into this process once the spec says it is trusted)."""
    function = str(assignment["function"])
    version = assignment.get("version")
    settings = settings.model_copy(
        update={
            "function": function,
            "version": int(version) if version is not None else None,
            "stem": False,
        }
    )
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT.format(name=function)))
    log.info("stem %d becomes %s v%s", os.getpid(), function, version)
    return settings, float(assignment.get("at") or time.time())


def _created_at(default: float) -> float:
    try:
        import psutil

        return float(psutil.Process().create_time())
    except Exception:
        return default


def main(argv: list[str] | None = None) -> int:
    """Parse ``--function``/``--version`` (or DEEPFAAS_FUNCTION) and serve."""
    started = time.time()
    parser = argparse.ArgumentParser(prog="python -m runtimes", description=__doc__)
    parser.add_argument("--function", help="function to serve (or DEEPFAAS_FUNCTION)")
    parser.add_argument("--version", type=int, help="function version expected")
    parser.add_argument("--stem", action="store_true", help="start as a prewarmed stem cell")
    args = parser.parse_args(argv)
    overrides: dict[str, object] = {}
    if args.function:
        overrides["function"] = args.function
    if args.version:
        overrides["version"] = args.version
    if args.stem:
        overrides["stem"] = True
    settings = WorkerSettings(**overrides)  # type: ignore[arg-type]
    # From the spawn, so interpreter start-up and imports count as init time (a stem's init
    # time starts at its assignment instead).
    started = settings.spawned_at or _created_at(started)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.__stderr__,
        format=LOG_FORMAT.format(name=settings.function or "stem"),
    )
    if not settings.function and not settings.stem:
        log.error("no function to serve: pass --function or set DEEPFAAS_FUNCTION")
        return EXIT_BAD_SETTINGS
    return event_loop.run(serve(settings, started), uvloop=settings.uvloop)
