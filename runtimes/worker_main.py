"""Entry point of a worker process: settings, connection, the function, signals."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time

from eventbus.connection import Bus
from eventbus.streams import ensure_layout
from runtimes.errors import FunctionLoadError
from runtimes.loader import failing_function, load_function
from runtimes.registry import FunctionRegistry
from runtimes.settings import WorkerSettings
from runtimes.worker import Worker

log = logging.getLogger("deepfaas.worker")
EXIT_RESTART = 75


async def serve(settings: WorkerSettings, started: float) -> int:
    """Run a worker until SIGTERM/SIGINT; the exit code tells the provider what happened."""
    bus = await Bus.connect(
        settings.nats_url, name=f"worker-{settings.function}", prefix=settings.event_prefix
    )
    try:
        await ensure_layout(bus.js)
        spec = await FunctionRegistry(bus).get(settings.function)
        if settings.version is not None and spec.version != settings.version:
            log.info(
                "serving %s v%d (v%d was asked; the newest wins)",
                spec.name,
                spec.version,
                settings.version,
            )
        try:
            loaded = load_function(spec)
        except FunctionLoadError as exc:
            # Serve anyway: every invocation then fails with the reason instead of waiting.
            log.error("cannot load %s: %s", settings.function, exc)
            loaded = failing_function(spec, exc)
        worker = Worker(bus, loaded, settings, started=started)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
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
        await bus.close()


def main(argv: list[str] | None = None) -> int:
    """Parse ``--function``/``--version`` (or DEEPFAAS_FUNCTION) and serve."""
    # From the process's creation, so interpreter start-up and imports count as init time.
    try:
        import psutil

        started = psutil.Process().create_time()
    except Exception:
        started = time.time()
    parser = argparse.ArgumentParser(prog="python -m runtimes", description=__doc__)
    parser.add_argument("--function", help="function to serve (or DEEPFAAS_FUNCTION)")
    parser.add_argument("--version", type=int, help="function version expected")
    args = parser.parse_args(argv)
    overrides: dict[str, object] = {}
    if args.function:
        overrides["function"] = args.function
    if args.version:
        overrides["version"] = args.version
    settings = WorkerSettings(**overrides)  # type: ignore[arg-type]
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.__stderr__,
        format=f"%(asctime)s worker[{settings.function}] %(levelname)s %(name)s: %(message)s",
    )
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(serve(settings, started))
