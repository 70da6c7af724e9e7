"""The fork server: one process that has imported the worker once and forks workers from it.

`python -m runtimes.worker.zygote --fd N` is started by the local provider with no platform
credential in its environment (`runtimes.providers.forkserver.zygote_env`). It imports the
worker's modules, freezes what it allocated (``gc.freeze``: the garbage collector then never
writes to those pages, so they stay shared copy-on-write with every child), and waits on the
socket ``N`` (SOCK_SEQPACKET) for requests. A request is ``{"op": "fork", "id": n}`` with
three file descriptors: a pipe holding the child's environment, its stdin and its log. The
fork happens before the environment is read, so the credentials in it only ever exist in
that child: this process never reads them and no later child inherits them. The child closes
this socket, starts its own session and runs `runtimes.worker.main.main` as a spawned
worker would; its runner is started by it, through bubblewrap, exactly as before.

Replies: ``ready`` once imported, ``forked`` (with a pidfd of the child), ``exit`` (pid and
its status, as `subprocess.Popen.returncode` gives it). End of the socket: this process
exits; children it forked keep running (they answer to the provider, not to this process).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import select
import signal
import socket
import sys
import traceback
from typing import NoReturn

from eventbus.loop import freeze_startup

#: the largest request or reply (a few small JSON objects)
MAX_MESSAGE = 64 * 1024


def preload(ws: bool, modules: list[str]) -> None:
    """Import what every worker imports (and ``modules``), then freeze it for the children."""
    if not ws:
        # as `python -m runtimes` does: nats-py's aiohttp is only for websocket URLs
        sys.modules.setdefault("aiohttp", None)  # type: ignore[arg-type]
    import runtimes.worker.main  # noqa: F401
    from eventbus.storage.settings import create_storage  # noqa: F401

    with contextlib.suppress(ImportError):
        import uvloop  # noqa: F401
    for module in modules:
        try:
            __import__(module)
        except Exception as exc:  # a preload is an optimisation: the worker imports it again
            print(f"fork server cannot preload {module}: {exc}", file=sys.stderr, flush=True)
    freeze_startup()


def serve(sock: socket.socket) -> None:
    """Fork on request and report exits until the provider closes the socket."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake select through the fd
    _send(sock, {"op": "ready", "pid": os.getpid()})
    print(f"fork server {os.getpid()} ready", flush=True)
    while True:
        try:
            readable = select.select([sock.fileno(), wake_r], [], [], 1.0)[0]
        except InterruptedError:
            readable = []
        if wake_r in readable:
            while True:
                try:
                    if not os.read(wake_r, 512):
                        break
                except BlockingIOError:
                    break
        _reap(sock)
        if sock.fileno() not in readable:
            continue
        try:
            message, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 4)
        except ConnectionResetError:
            return
        if not message:
            return
        request = _loads(message)
        if request.get("op") == "fork" and len(fds) == 3:
            _fork(sock, int(str(request.get("id", 0))), fds, (wake_r, wake_w))
        for fd in fds:
            os.close(fd)


def _fork(sock: socket.socket, ident: int, fds: list[int], wake: tuple[int, int]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    gc.freeze()  # what the loop allocated since, too: nothing for the child's GC to dirty
    pid = os.fork()
    if pid == 0:
        _child(sock, fds, wake)
    pidfd = os.pidfd_open(pid)
    try:
        socket.send_fds(sock, [_dumps({"op": "forked", "id": ident, "pid": pid})], [pidfd])
    finally:
        os.close(pidfd)


def _child(sock: socket.socket, fds: list[int], wake: tuple[int, int]) -> NoReturn:
    """Become a worker: own session, stdio, the environment from the pipe; never return."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        sock.close()
        for fd in wake:
            os.close(fd)
        env_fd, stdin_fd, log_fd = fds
        os.setsid()
        os.dup2(stdin_fd, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        env = _read_env(env_fd)
        # nothing else of the fork server's stays open in the worker
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        os.environ.clear()
        os.environ.update(env)
        gc.enable()
        from runtimes.worker.main import main

        code = main([])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _read_env(fd: int) -> dict[str, str]:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    value = _loads(b"".join(chunks))
    return {str(k): str(v) for k, v in value.items()}


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        try:
            _send(sock, {"op": "exit", "pid": pid, "code": code})
        except OSError:
            return


def _send(sock: socket.socket, message: dict[str, object]) -> None:
    sock.send(_dumps(message))


def _dumps(value: dict[str, object]) -> bytes:
    import orjson

    return orjson.dumps(value)


def _loads(data: bytes) -> dict[str, object]:
    import orjson

    value = orjson.loads(data)
    return value if isinstance(value, dict) else {}


def main(argv: list[str] | None = None) -> int:
    """Parse ``--fd``, import the worker, serve fork requests."""
    parser = argparse.ArgumentParser(prog="python -m runtimes.worker.zygote")
    parser.add_argument("--fd", type=int, required=True, help="the provider's SEQPACKET socket")
    parser.add_argument("--ws", action="store_true", help="keep aiohttp (websocket NATS URLs)")
    parser.add_argument("--preload", default="", help="more modules to import (comma-separated)")
    args = parser.parse_args(argv)
    sock = socket.socket(fileno=args.fd)
    preload(args.ws, [m.strip() for m in args.preload.split(",") if m.strip()])
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        serve(sock)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
