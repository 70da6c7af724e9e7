"""The local provider's side of the fork server (`runtimes.worker.zygote`).

A worker forked from a process that has already imported the runtime starts in milliseconds
instead of paying for an interpreter and its imports, and shares those pages copy-on-write
with every other forked worker. The fork server is started with an environment that holds no
credential (`zygote_env`); each child's environment travels through a pipe that only the child
reads. A `ForkedProcess` has the shape of `subprocess.Popen` the provider uses (pid, poll,
terminate, kill, wait, stdin), kept through a pidfd, so it can be signalled and seen to end
even when the fork server is gone (a kill -9 of the fork server leaves its workers serving;
the provider spawns as before until a new fork server is ready).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import orjson

log = logging.getLogger(__name__)
#: what a child's exit status reads as when the fork server that could report it is gone
UNKNOWN_EXIT = 255
#: environment variables a fork server keeps: nothing of the platform's, no credential
ZYGOTE_ENV_KEYS = frozenset(
    {"PATH", "HOME", "LANG", "TZ", "TMPDIR", "VIRTUAL_ENV", "USER", "LOGNAME", "MALLOC_ARENA_MAX"}
)
FORK_TIMEOUT_S = 5.0
MAX_ENV_BYTES = 60 * 1024


class ForkError(Exception):
    """The fork server could not fork (gone, not ready, or too slow): spawn instead."""


def zygote_env(env: Mapping[str, str]) -> dict[str, str]:
    """The fork server's environment: locale, paths and Python's own settings, nothing else."""
    return {
        k: v
        for k, v in env.items()
        if k in ZYGOTE_ENV_KEYS or k.startswith("LC_") or k in ("PYTHONPATH", "PYTHONHASHSEED")
    }


class ForkedProcess:
    """A worker forked by the fork server, with the parts of `Popen` the provider uses."""

    def __init__(self, pid: int, pidfd: int, server: ForkServer, stdin: IO[bytes] | None) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.stdin = stdin
        self.returncode: int | None = None
        self._server = server

    def poll(self) -> int | None:
        """The exit status once the process is gone (`UNKNOWN_EXIT` if nobody could see it)."""
        if self.returncode is None:
            code = self._server.exit_code(self.pid)
            if code is None and not self._server.alive and _ended(self.pidfd):
                code = self._server.exit_code(self.pid)
                if code is None:
                    log.warning("worker %d ended after its fork server; status unknown", self.pid)
                    code = UNKNOWN_EXIT
            if code is not None:
                self.returncode = code
                with contextlib.suppress(OSError):
                    os.close(self.pidfd)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Signal the worker through its pidfd (never a recycled pid)."""
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(self.pidfd, sig)

    def terminate(self) -> None:
        """SIGTERM."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL."""
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        """Block until the worker is gone; `subprocess.TimeoutExpired` after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0.0)
            with contextlib.suppress(OSError, ValueError):
                select.select([self.pidfd], [], [], 0.05)
            time.sleep(0.005)
        return code


class ForkServer:
    """Starts `runtimes.worker.zygote` and asks it for workers."""

    def __init__(
        self,
        python: str,
        env: Mapping[str, str],
        *,
        log_path: Path | None = None,
        preload: str = "",
    ) -> None:
        self.python = python
        self.env = zygote_env(env)
        self.ws = "ws://" in env.get("DEEPFAAS_NATS_URL", "").lower().replace("wss://", "ws://")
        self.preload = preload
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._ids = 0
        self._replies: dict[int, tuple[int, int]] = {}
        self._replied = threading.Condition(self._lock)
        self._exits: dict[int, int] = {}
        self._eof = False

    @property
    def alive(self) -> bool:
        """Whether the fork server process runs and its socket is open."""
        return self.process is not None and self.process.poll() is None and not self._eof

    @property
    def ready(self) -> bool:
        """Whether it has imported the runtime and takes requests."""
        return self._ready.is_set() and self.alive

    @property
    def pid(self) -> int | None:
        """The fork server's pid, once started."""
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        """Start the fork server; it says ready once it has imported the runtime."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        out: Any = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            out = self.log_path.open("ab")
        command = [self.python, "-m", "runtimes.worker.zygote", "--fd", str(theirs.fileno())]
        if self.ws:
            command.append("--ws")
        if self.preload:
            command += ["--preload", self.preload]
        try:
            self.process = subprocess.Popen(
                command,
                env=self.env,
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            theirs.close()
            if out is not subprocess.DEVNULL:
                out.close()
        self._sock = ours
        self._eof = False
        self._ready.clear()
        self._reader = threading.Thread(target=self._read, name="fork-server", daemon=True)
        self._reader.start()

    def fork(
        self, env: Mapping[str, str], log_path: Path | None, *, stdin: bool = False
    ) -> ForkedProcess:
        """A new worker with ``env``, its output appended to ``log_path``; `ForkError` if not."""
        if not self.ready or self._sock is None:
            raise ForkError("the fork server is not ready")
        data = orjson.dumps(dict(env))
        if len(data) > MAX_ENV_BYTES:
            raise ForkError(f"a worker environment of {len(data)} bytes does not fit the pipe")
        env_r, env_w = os.pipe()
        try:
            os.write(env_w, data)
        finally:
            os.close(env_w)
        own: list[int] = [env_r]
        writer: IO[bytes] | None = None
        if stdin:
            stdin_r, stdin_w = os.pipe()
            own.append(stdin_r)
            writer = os.fdopen(stdin_w, "wb")
        else:
            own.append(os.open(os.devnull, os.O_RDONLY))
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            own.append(os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
        else:
            own.append(os.open(os.devnull, os.O_WRONLY))
        with self._lock:
            self._ids += 1
            ident = self._ids
        try:
            socket.send_fds(self._sock, [orjson.dumps({"op": "fork", "id": ident})], own)
            pid, pidfd = self._await_reply(ident)
        except (OSError, ForkError) as exc:
            if writer is not None:
                writer.close()
            raise ForkError(f"the fork server did not fork: {exc}") from exc
        finally:
            for fd in own:
                os.close(fd)
        return ForkedProcess(pid, pidfd, self, writer)

    def exit_code(self, pid: int) -> int | None:
        """The status the fork server reported for its child ``pid``, if it has."""
        with self._lock:
            return self._exits.pop(pid, None)

    def close(self) -> None:
        """Close the socket (the fork server exits at its end); its workers keep running."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        if self.process is not None:
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._reader is not None:
            self._reader.join(5)

    def _await_reply(self, ident: int) -> tuple[int, int]:
        deadline = time.monotonic() + FORK_TIMEOUT_S
        with self._replied:
            while ident not in self._replies:
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    raise ForkError("no answer from the fork server")
                self._replied.wait(left)
            return self._replies.pop(ident)

    def _read(self) -> None:
        sock = self._sock
        assert sock is not None
        try:
            while True:
                message, fds, _, _ = socket.recv_fds(sock, 65536, 2)
                if not message:
                    break
                value = orjson.loads(message)
                op = value.get("op")
                if op == "ready":
                    self._ready.set()
                elif op == "forked" and fds:
                    with self._replied:
                        self._replies[int(value["id"])] = (int(value["pid"]), fds[0])
                        self._replied.notify_all()
                    continue
                elif op == "exit":
                    with self._lock:
                        self._exits[int(value["pid"])] = int(value["code"])
                for fd in fds:
                    os.close(fd)
        except OSError:
            pass
        finally:
            with self._replied:
                self._eof = True
                self._replied.notify_all()


def _ended(pidfd: int) -> bool:
    try:
        readable, _, _ = select.select([pidfd], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
