"""The process inside the sandbox: loads one function and runs its activations.

Started by bubblewrap as root of its own namespaces with only CAP_SETUID/CAP_SETGID; it
keeps the pipe to its worker, waits for the ``load`` frame, then drops to the uid it was
given, sets the kernel limits and only then imports or executes user code. It never holds
a credential: storage goes through the worker (`proxy.ProxyStorage`).

It starts without pydantic, the bus's models or the storage package (`tests/runtimes/
test_sandbox.py` checks): the spec arrives as plain JSON the worker validated, and those load
only when a handler needs them (a typed input, ``ctx.event``, ``ctx.storage``: `ondemand`).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import resource
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from eventbus.loop import freeze_startup
from runtimes.context import ActivationStatus, Context
from runtimes.errors import FunctionLoadError
from runtimes.sandbox import protocol
from runtimes.sandbox.ondemand import EventOnDemand, StorageOnDemand
from runtimes.sandbox.types import RunnerSpec
from runtimes.worker.executor import Executor, Outcome
from runtimes.worker.loader import failing_function, load_function

if TYPE_CHECKING:
    from runtimes.types import FunctionSpec

PR_SET_NO_NEW_PRIVS = 38
log = logging.getLogger("deepfaas.runner")


class Runner:
    """One function's activations, each a task, answered as frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.frames = protocol.FrameWriter(writer)
        self.storage = StorageOnDemand(self.send, asyncio.get_running_loop())
        self.executor: Executor | None = None
        self.limits: dict[str, Any] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.cpu_exceeded = False
        self.fn_logger = logging.getLogger("deepfaas.fn")

    async def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        """Write one frame (whole, so concurrent senders never interleave)."""
        await self.frames.send(header, payload)

    async def serve(self) -> None:
        """Read frames until the worker closes the pipe or says stop."""
        while True:
            frame = await protocol.read_frame(self.reader)
            if frame is None:
                return
            header, payload = frame
            op = header.get("op")
            if op == "run":
                task = asyncio.create_task(self.run(header, payload))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            elif op in ("storage-reply", "storage-chunk", "storage-end"):
                self.storage.deliver(header, payload)
            elif op == "load":
                await self.load(header)
            elif op == "stop":
                return

    async def load(self, header: dict[str, Any]) -> None:
        """Become the function: drop privileges, set limits, import its code."""
        limits = dict(header["limits"])
        spec: RunnerSpec | FunctionSpec
        if header["spec"].get("script") is not None:
            from runtimes.types import FunctionSpec  # a script's outputs are models

            spec = FunctionSpec.model_validate(header["spec"])
        else:
            spec = RunnerSpec.from_json(header["spec"])
        drop_privileges(int(header["uid"]), int(header["gid"]))
        self.limits = limits
        # The threads that run sync handlers start now, before the limits: started lazily
        # under load, each 8 MiB stack counted against the memory limit (RLIMIT_DATA) and a
        # pool of 66 failed near its 28th thread ("can't start new thread"), which read as the
        # user's process limit. Their stacks are the platform's, not the function's memory.
        threads = spec.concurrency + 2
        before = data_bytes()
        pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fn")
        prestart(pool, threads)
        set_limits(limits, threads=spec.concurrency + 8, stacks=data_bytes() - before)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large write fails, not the runner
        signal.signal(signal.SIGXCPU, self._on_cpu_limit)
        os.environ.update({str(k): str(v) for k, v in spec.env.items()})
        error = None
        started = time.perf_counter()
        try:
            loaded = load_function(spec)
        except FunctionLoadError as exc:
            error = str(exc)
            loaded = failing_function(spec, exc)
        self.executor = Executor(loaded, threads=threads, explain=self.explain)
        self.executor.pool.shutdown(wait=False)  # never started a thread: the prestarted one
        self.executor.pool = pool
        # what the function imported (a framework: ~100,000 objects for scikit-learn, a full
        # pass of ~45 ms each time) stays out of the garbage collector's full passes; no pass
        # first: this is on the cold start's clock
        freeze_startup(collect=False)
        await self.send(
            {
                "op": "loaded",
                "error": error,
                "load_ms": round((time.perf_counter() - started) * 1000, 3),
            }
        )

    def _on_cpu_limit(self, signum: int, frame: object) -> None:
        self.cpu_exceeded = True

    def explain(self, exc: BaseException) -> str | None:
        """The limit a handler's exception means, if it means one."""
        limits = self.limits
        if _raised_by_the_pool(exc):
            return None  # the platform's own thread did not start: not the function's limit
        if isinstance(exc, MemoryError):
            return f"memory limit {limits.get('memory_mb')} MiB exceeded"
        if isinstance(exc, OSError) and exc.errno == errno.EAGAIN:
            return f"process limit {limits.get('max_processes')} exceeded"
        if isinstance(exc, RuntimeError) and "can't start new thread" in str(exc):
            return f"process limit {limits.get('max_processes')} exceeded"
        if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
            return f"file size limit {limits.get('max_file_mb')} MiB exceeded"
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
            return f"open files limit {limits.get('max_open_files')} exceeded"
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return f"/tmp limit {limits.get('tmp_mb')} MiB exceeded"
        return None

    async def run(self, header: dict[str, Any], payload: bytes) -> None:
        """One activation: build its context, run it, answer with the outcome."""
        assert self.executor is not None, "run before load"
        c = header["ctx"]
        event = c.get("event")
        ctx = Context(
            activation_id=c["activation_id"],
            function=c["function"],
            version=int(c["version"]),
            deadline=float(c["deadline"]),
            logger=self.fn_logger.getChild(c["function"]),
            event=None if event is None else EventOnDemand(event, payload),  # type: ignore[arg-type]
            attempt=int(c.get("attempt", 1)),
            storage=self.storage,
            output=c.get("output"),
        )
        try:
            outcome = await self.executor.run(payload, header.get("content_type"), ctx)
        except BaseException as exc:  # the runner must answer, whatever happened
            outcome = Outcome(status=ActivationStatus.ERROR, error=f"{type(exc).__name__}: {exc}")
        if self.cpu_exceeded:
            outcome.status = ActivationStatus.ERROR
            outcome.error = f"CPU time limit {self.limits.get('cpu_s')} s of this runtime exceeded"
            outcome.final = True
        answer: dict[str, Any] = {
            "op": "done",
            "id": header["id"],
            "status": outcome.status.value,
            "error": outcome.error,
            "error_code": outcome.error_code,
            "error_detail": outcome.error_detail,
            "logs": outcome.logs,
            "start": outcome.start.isoformat(),
            "duration_ms": outcome.duration_ms,
            "final": outcome.final,
            "annotations": ctx.annotations,
            # Threads of timed-out sync runs that never returned: past the concurrency, a
            # fresh runner serves better than this one.
            "recycle": self.cpu_exceeded
            or outcome.recycle
            or self.executor.abandoned > self.executor.loaded.spec.concurrency,
        }
        body = b""
        if isinstance(outcome.result, bytes):
            answer["bytes"] = True
            body = outcome.result
        else:
            answer["result"] = outcome.result
        try:
            await self.send(answer, body)
        except (TypeError, ValueError) as exc:  # annotations that are not JSON
            answer.update(
                annotations={},
                status="error",
                result=None,
                error=f"the function's annotations are not JSON-serialisable: {exc}",
            )
            await self.send(answer, body)


def _raised_by_the_pool(exc: BaseException) -> bool:
    """Whether ``exc`` came from the executor starting one of its threads, not from user code."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "_adjust_thread_count":
            return True
        tb = tb.tb_next
    return False


def drop_privileges(uid: int, gid: int) -> None:
    """Become ``uid``/``gid`` with no capabilities and no way back (no_new_privs)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if os.getuid() == 0:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")


def data_bytes() -> int:
    """This process's private writable memory as RLIMIT_DATA counts it (VmData)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmData:"):
                return int(line.split()[1]) << 10
    return 0


def prestart(pool: ThreadPoolExecutor, count: int) -> None:
    """Have all ``count`` threads of ``pool`` running (idle) before this returns."""
    barrier = threading.Barrier(count + 1)
    for _ in range(count):
        pool.submit(barrier.wait, 30)  # each waits, so each submit starts a thread
    barrier.wait(30)


def set_limits(limits: dict[str, Any], *, threads: int, stacks: int = 0) -> None:
    """The kernel's limits for everything this process and its children do from now on
    (``stacks``: bytes of the platform's thread stacks, not counted as the function's)."""

    def cap(kind: int, value: int, hard: int | None = None) -> None:
        _, current_hard = resource.getrlimit(kind)
        hard = value if hard is None else hard
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)
            value = min(value, hard)
        resource.setrlimit(kind, (value, hard))

    cap(resource.RLIMIT_DATA, (int(limits["memory_mb"]) << 20) + max(0, stacks))
    cap(resource.RLIMIT_NPROC, int(limits["max_processes"]) + threads)
    cap(resource.RLIMIT_NOFILE, int(limits["max_open_files"]))
    cap(resource.RLIMIT_FSIZE, int(limits["max_file_mb"]) << 20)
    cap(resource.RLIMIT_CPU, int(limits["cpu_s"]), int(limits["cpu_s"]) + 30)
    cap(resource.RLIMIT_CORE, 0)


async def main() -> int:
    """Serve the worker on the pipe it gave us as stdin/stdout."""
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # stray writes to fd 1 go to the worker's log, not into the protocol
    os.close(devnull)
    logging.basicConfig(level=logging.WARNING, stream=sys.__stderr__,
                        format="runner %(levelname)s %(name)s: %(message)s")  # fmt: skip
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=protocol.MAX_PAYLOAD)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(proto_in, "rb", buffering=0)
    )
    transport, proto = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(proto_out, "wb", buffering=0)
    )
    writer = asyncio.StreamWriter(transport, proto, reader, loop)
    runner = Runner(reader, writer)
    await runner.send({"op": "hello", "pid": os.getpid(), "at": datetime.now(UTC).isoformat()})
    await runner.serve()
    return 0


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    sys.exit(asyncio.run(main()))
