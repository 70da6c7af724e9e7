"""The prewarmed pool: generic worker processes ("stem cells") waiting to become a function.

As OpenWhisk keeps prewarmed containers, the local provider keeps ``size`` worker processes
started with Python imported, the bus connected and storage open, but no function loaded.
A stem is told what to become with one JSON line on its stdin (function, version, the time
of assignment); it loads the function and serves it, and its init time
runs from that assignment. Stems only become CPU workers: a GPU worker needs its own
``CUDA_VISIBLE_DEVICES`` before CUDA is imported, so GPU workers are always spawned fresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from runtimes.errors import ProvisioningError

log = logging.getLogger(__name__)


class WorkerProcess(Protocol):
    """A worker process as the provider sees it: `subprocess.Popen`, or a forked one."""

    pid: int
    returncode: int | None
    stdin: IO[bytes] | None

    def poll(self) -> int | None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...
    def wait(self, timeout: float | None = None) -> int: ...


#: starts a worker with an environment and a log file, its stdin a pipe when asked
Spawner = Callable[[Mapping[str, str], Path | None, bool], WorkerProcess]


def spawn_worker(
    python: str, env: Mapping[str, str], log_path: Path | None, *, site: str, stdin: bool = False
) -> subprocess.Popen[bytes]:
    """Start `python -m runtimes` in its own session, output appended to ``log_path``."""
    out: Any = subprocess.DEVNULL
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = log_path.open("ab")
    try:
        return subprocess.Popen(
            [python, "-m", "runtimes"],
            env=dict(env),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        raise ProvisioningError(f"cannot start a worker: {exc}", site=site) from exc
    finally:
        if out is not subprocess.DEVNULL:
            out.close()


async def stop_process(process: WorkerProcess, grace: float = 35.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    deadline = time.monotonic() + grace
    while process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await asyncio.to_thread(process.wait)


@dataclass
class Stem:
    """One prewarmed worker process."""

    process: WorkerProcess
    started: float
    ready: bool = False


class StemPool:
    """Keeps ``size`` stem cells started; hands one out to become a CPU worker."""

    def __init__(
        self, size: int, python: str, env: Mapping[str, str], log_dir: Path | None, site: str
    ) -> None:
        self.size = size
        self.python = python
        self.env = {**env, "DEEPFAAS_STEM": "true", "CUDA_VISIBLE_DEVICES": ""}
        self.env.pop("DEEPFAAS_FUNCTION", None)
        self.log_path = log_dir / "stems.log" if log_dir is not None else None
        self.site = site
        self.stems: list[Stem] = []
        #: how stems start (the provider sets its fork server's); None: `spawn_worker`
        self.spawner: Spawner | None = None

    @property
    def ready(self) -> int:
        """Stems that said they are warm."""
        return sum(1 for s in self.stems if s.ready)

    def refill(self) -> None:
        """Forget dead stems and start new ones up to ``size``."""
        for stem in [s for s in self.stems if s.process.poll() is not None]:
            log.warning("stem %d exited with %s", stem.process.pid, stem.process.returncode)
            self.stems.remove(stem)
        while len(self.stems) < self.size:
            process: WorkerProcess
            if self.spawner is not None:
                process = self.spawner(self.env, self.log_path, True)
            else:
                process = spawn_worker(
                    self.python, self.env, self.log_path, site=self.site, stdin=True
                )
            self.stems.append(Stem(process=process, started=time.time()))

    def mark_ready(self, pid: int) -> bool:
        """A stem said it is warm; False when ``pid`` is no stem of this pool."""
        for stem in self.stems:
            if stem.process.pid == pid:
                stem.ready = True
                return True
        return False

    def assign(self, function: str, version: int) -> Stem | None:
        """Take a stem (warm ones first, then the oldest) and tell it what to become."""
        candidates = sorted(
            (s for s in self.stems if s.process.poll() is None),
            key=lambda s: (not s.ready, s.started),
        )
        for stem in candidates:
            self.stems.remove(stem)
            at = time.time()
            line = {"function": function, "version": version, "at": at}
            if _send(stem.process.stdin, orjson.dumps(line) + b"\n"):
                stem.started = at
                return stem
        return None

    async def close(self) -> None:
        """Stop every stem."""
        stems, self.stems = self.stems, []
        for stem in stems:
            if stem.process.stdin is not None:
                with contextlib.suppress(OSError):
                    stem.process.stdin.close()  # EOF: a stem still waiting exits by itself
        await asyncio.gather(*(stop_process(s.process, grace=5.0) for s in stems))


def _send(pipe: IO[bytes] | None, data: bytes) -> bool:
    if pipe is None:
        return False
    try:
        pipe.write(data)
        pipe.flush()
    except (BrokenPipeError, OSError, ValueError):
        return False
    finally:
        with contextlib.suppress(OSError):
            pipe.close()
    return True
