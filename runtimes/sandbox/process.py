"""One sandboxed runner process, seen from its worker: frames in and out, and its end."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import signal
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from runtimes.pids import pid_alive
from runtimes.sandbox import protocol
from runtimes.sandbox.netns import UserNetwork
from runtimes.sandbox.types import SandboxUnavailableError

log = logging.getLogger(__name__)
Frame = tuple[dict[str, Any], bytes]
OnFrame = Callable[["RunnerProcess", dict[str, Any], bytes], Awaitable[None]]
#: bytes of a runner's own stderr (stray prints to fd 1/2) copied to the worker's log
STDERR_BUDGET = 256 * 1024


class RunnerGoneError(Exception):
    """The runner exited; ``reason`` says how (a limit, a crash, a stop)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RunnerProcess:
    """A runner started in bubblewrap, talking frames over its stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process, scratch: Path, label: str) -> None:
        self.proc = proc
        self.scratch = scratch
        self.label = label
        self.pid: int | None = None
        self.on_frame: OnFrame | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[Frame]] = {}
        self._hello: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._gone: str | None = None
        self._out: protocol.FrameWriter | None = None
        self._reader = asyncio.create_task(self._read(), name=f"runner-{label}")
        self._stderr = asyncio.create_task(self._drain_stderr(), name=f"runner-err-{label}")
        self.loaded = False
        self.draining = False
        #: the user-mode network of an `egress` runner, and bwrap's info fd until it exists
        self.network: UserNetwork | None = None
        self._network_closing: asyncio.Future[None] | None = None
        self._info_fd: int | None = None

    @classmethod
    async def spawn(
        cls,
        command: list[str],
        scratch: Path,
        label: str,
        *,
        info: tuple[int, int] | None = None,
    ) -> RunnerProcess:
        """Start the runner; SandboxUnavailableError if bubblewrap cannot start it. ``info``:
        a pipe whose write end ``command`` names in ``--info-fd`` (both ends are closed by
        this runner), for `attach_network`."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=protocol.MAX_PAYLOAD,
                pass_fds=() if info is None else (info[1],),
            )
        except OSError as exc:
            if info is not None:
                os.close(info[0])
            raise SandboxUnavailableError(f"cannot start the sandbox: {exc}") from exc
        finally:
            if info is not None:
                os.close(info[1])
        runner = cls(proc, scratch, label)
        runner._info_fd = None if info is None else info[0]
        return runner

    async def attach_network(self, deny: Sequence[str] = ()) -> None:
        """Connect the runner's network namespace outside (`UserNetwork`), once its hello
        came: bwrap is done setting the namespace up by then (slirp4netns configuring it while
        bwrap still brought up its loopback failed bwrap now and then)."""
        fd, self._info_fd = self._info_fd, None
        if fd is not None:
            self.network = await UserNetwork.attach(fd, deny=deny)

    @property
    def alive(self) -> bool:
        """Whether the runner still answers."""
        return self._gone is None and self.proc.returncode is None

    @property
    def inflight(self) -> int:
        """Runs sent and not yet answered."""
        return sum(1 for key in self._waiting if key.startswith("run:"))

    async def ready(self, timeout: float) -> None:
        """Wait for the runner's hello; RunnerGoneError if it died first."""
        try:
            header, _ = await asyncio.wait_for(asyncio.shield(self._hello), timeout)
        except TimeoutError:
            await self.kill()
            raise RunnerGoneError(f"the sandbox did not start within {timeout:g} s") from None
        self.pid = int(header.get("pid", 0)) or None

    async def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        """Write one frame; RunnerGoneError when the pipe is closed."""
        if self._gone is not None or self.proc.stdin is None:
            raise RunnerGoneError(self._gone or "the sandbox is gone")
        if self._out is None:
            self._out = protocol.FrameWriter(self.proc.stdin)
        try:
            await self._out.send(header, payload)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise RunnerGoneError(self._gone or "the sandbox closed its pipe") from exc

    async def request(self, key: str, header: dict[str, Any], payload: bytes = b"") -> Frame:
        """Send a frame and wait for the answer filed under ``key`` (`run:<id>`, `loaded`)."""
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._waiting[key] = future
        try:
            await self.send(header, payload)
            return await future
        finally:
            self._waiting.pop(key, None)

    def next_id(self) -> int:
        """A fresh id for a run."""
        return next(self._ids)

    async def stop(self, grace: float = 2.0) -> None:
        """Ask the runner to exit, then kill its sandbox; remove its scratch dir."""
        if self.alive:
            with contextlib.suppress(RunnerGoneError):
                await self.send({"op": "stop"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), grace)
        await self.kill()

    async def kill(self) -> None:
        """SIGKILL the sandbox (every process in it dies with its PID namespace)."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        if self._info_fd is not None:
            os.close(self._info_fd)
            self._info_fd = None
        await self._close_network()
        self._reader.cancel()
        self._stderr.cancel()
        await asyncio.gather(self._reader, self._stderr, return_exceptions=True)
        self._fail(self._gone or "the sandbox was stopped")
        await asyncio.to_thread(shutil.rmtree, self.scratch, True)

    async def _close_network(self) -> None:
        # one close, shared by the reader (the runner exited) and kill(), which cancels the
        # reader: shielded, so that a cancel does not leave slirp4netns half stopped
        if self.network is not None and self._network_closing is None:
            self._network_closing = asyncio.ensure_future(self.network.close())
        if self._network_closing is not None:
            await asyncio.shield(self._network_closing)
            self.network = None

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            while True:
                frame = await protocol.read_frame(self.proc.stdout)
                if frame is None:
                    break
                header, payload = frame
                op = header.get("op")
                if op == "hello" and not self._hello.done():
                    self._hello.set_result(frame)
                elif op == "done":
                    self._resolve(f"run:{header.get('id')}", frame)
                elif op == "loaded":
                    self._resolve("loaded", frame)
                elif self.on_frame is not None:
                    await self.on_frame(self, header, payload)
        except (protocol.ProtocolError, ValueError) as exc:
            log.error("runner %s broke the protocol: %s", self.label, exc)
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        code = await self.proc.wait()
        self._fail(exit_reason(code))
        await self._close_network()  # a runner that died idle is replaced without a kill()

    def _resolve(self, key: str, frame: Frame) -> None:
        future = self._waiting.get(key)
        if future is not None and not future.done():
            future.set_result(frame)

    def _fail(self, reason: str) -> None:
        if self._gone is None:
            self._gone = reason
        error = RunnerGoneError(self._gone)
        for future in [*self._waiting.values(), self._hello]:
            if not future.done():
                future.set_exception(error)
        if self._hello.done() and not self._hello.cancelled():
            self._hello.exception()  # retrieved: no "never retrieved" warning

    async def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        budget = STDERR_BUDGET
        while True:
            line = await self.proc.stderr.readline()
            if not line:
                return
            if budget > 0:
                budget -= len(line)
                text = line[:2000].decode(errors="replace").rstrip()
                log.warning("runner %s: %s", self.label, text)
                if budget <= 0:
                    log.warning("runner %s: further output of the sandbox is dropped", self.label)


def exit_reason(code: int | None) -> str:
    """How a runner ended, in words (bwrap reports a signal as 128 + its number)."""
    if code is None:
        return "the sandbox is gone"
    sig = -code if code < 0 else code - 128 if code > 128 else 0
    if sig == signal.SIGXCPU:
        return "the sandbox exceeded its CPU time limit"
    if sig == signal.SIGKILL:
        return "the sandbox was killed (SIGKILL: out of memory, or stopped)"
    if sig:
        name = signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)
        return f"the sandbox crashed ({name})"
    return f"the sandbox exited with status {code}"


def prepare_scratch(root: Path, name: str, uid: int, gid: int) -> Path:
    """A fresh scratch dir owned by the runner's uid, private to it."""
    root.mkdir(parents=True, exist_ok=True, mode=0o711)
    path = root / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700)
    if os.getuid() == 0:
        os.chown(path, uid, gid)
    return path


def remove_stale_scratch(root: Path) -> None:
    """Remove scratch dirs of workers that are gone (killed before they could clean up)."""
    if not root.is_dir():
        return
    for path in root.iterdir():
        # named <label>-<worker pid>-<n>; the label may hold dashes itself
        parts = path.name.rsplit("-", 2)
        if len(parts) == 3 and parts[1].isdigit() and not pid_alive(int(parts[1])):
            shutil.rmtree(path, ignore_errors=True)
