"""The network of an `egress` runner: a namespace of its own, reaching out through slirp4netns.

A runner that shared the host's network could reach every service the machine keeps on
loopback (SeaweedFS's filer and volume servers, nats-server's monitoring, anything an operator
runs there): a tenant's function read another namespace's objects straight from the filer.
An `egress` runner now gets its own network namespace (`bwrap --unshare-net`, as `none` does)
with a tap device that slirp4netns, a user-mode TCP/IP stack in a process of its own, connects
to the outside. `--disable-host-loopback` refuses the one path back to the host's loopback
(slirp's gateway address); the runner's own 127.0.0.1 is its namespace's. Its DNS is slirp's
forwarder (`NAMESERVER`), so names resolve as they do on the host. Networks the operator
denies (`DEEPFAAS_SANDBOX_DENY`; by default the link-local range, where clouds answer with the
machine's credentials at 169.254.169.254, and Alibaba's 100.100.100.200) are unreachable
routes in the namespace, which the runner, without capabilities, cannot change.

slirp4netns runs as root outside the sandbox with its own seccomp filter and an empty root
(`--enable-seccomp`, `--enable-sandbox`), and exits when the worker closes its end of
`--exit-fd` (the worker stops the runner, or dies).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from runtimes.sandbox.types import SandboxUnavailableError, required_tool

#: the DNS forwarder slirp4netns answers on inside the namespace
NAMESERVER: Final = "10.0.2.3"
#: seconds bwrap and slirp4netns get to say where the namespace is and that it is up
SETUP_TIMEOUT_S: Final = 10.0


def slirp_path() -> str:
    """Where `slirp4netns` is (SandboxUnavailableError naming the install if missing)."""
    return required_tool(
        "slirp4netns",
        "slirp4netns",
        "or set DEEPFAAS_SANDBOX_EGRESS=host where the host's loopback holds nothing a "
        "function may not reach",
    )


def resolv_conf(root: Path) -> Path:
    """A resolv.conf naming slirp's DNS forwarder, bound over /etc/resolv.conf in the runner."""
    root.mkdir(parents=True, exist_ok=True, mode=0o711)
    path = root / "resolv.conf"
    text = f"nameserver {NAMESERVER}\n"
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(f".{os.getpid()}")
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(path)
    return path


class UserNetwork:
    """The slirp4netns process of one runner's namespace."""

    def __init__(self, proc: asyncio.subprocess.Process, exit_fd: int) -> None:
        self.proc = proc
        self._exit_fd: int | None = exit_fd
        self._drain: asyncio.Task[None] | None = None

    @classmethod
    async def attach(
        cls, info_fd: int, *, deny: Sequence[str] = (), timeout: float = SETUP_TIMEOUT_S
    ) -> UserNetwork:
        """Read bwrap's ``--info-fd`` (the sandbox's first pid and its network namespace),
        give that namespace a tap device connected outside and unreachable routes to ``deny``
        (CIDRs), and return once both are in place. ``info_fd`` is closed here.

        The namespace is opened once through the pid and checked against the inode bwrap
        named; slirp4netns and `ip` are handed that open namespace, not the pid (which a
        process that died could pass on)."""
        try:
            info = await asyncio.wait_for(_read_fd(info_fd, _parses), timeout)
        finally:
            os.close(info_fd)
        record = _json(info)
        pid, inode = record.get("child-pid"), record.get("net-namespace")
        if not isinstance(pid, int) or pid <= 0 or not isinstance(inode, int):
            raise SandboxUnavailableError(f"bubblewrap gave no sandbox namespace ({info!r})")
        try:
            netns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise SandboxUnavailableError(f"the sandbox is gone before its network: {exc}") from exc
        try:
            if os.fstat(netns).st_ino != inode:
                raise SandboxUnavailableError("the sandbox is gone before its network")
            return await cls._connect(netns, deny, timeout)
        finally:
            os.close(netns)

    @classmethod
    async def _connect(cls, netns: int, deny: Sequence[str], timeout: float) -> UserNetwork:
        ready_r, ready_w = os.pipe()
        exit_r, exit_w = os.pipe()
        command = [
            slirp_path(),
            "--configure",
            "--mtu=65520",
            "--disable-host-loopback",
            "--enable-seccomp",
            "--enable-sandbox",
            f"--ready-fd={ready_w}",
            f"--exit-fd={exit_r}",
            "--netns-type=path",
            f"/proc/self/fd/{netns}",
            "tap0",
        ]
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(ready_w, exit_r, netns),
            )
        except OSError as exc:
            os.close(ready_r)
            os.close(exit_w)
            raise SandboxUnavailableError(f"cannot start slirp4netns: {exc}") from exc
        finally:
            os.close(ready_w)  # slirp4netns holds its own copies of these two
            os.close(exit_r)
        network = cls(proc, exit_w)
        try:
            # the denied routes go in while slirp4netns configures its device
            ready, _ = await asyncio.wait_for(
                asyncio.gather(_read_fd(ready_r, bool), _unreachable(netns, deny)), timeout
            )
        except BaseException:
            await network.close()
            raise
        finally:
            os.close(ready_r)
        if ready != b"1":
            error = await _stderr_of(proc)
            await network.close()
            raise SandboxUnavailableError(f"slirp4netns did not set up the network: {error}")
        network._drain = asyncio.create_task(_discard(proc))
        return network

    async def close(self) -> None:
        """End slirp4netns (its exit fd closes; SIGKILL if it lingers)."""
        if self._exit_fd is not None:
            os.close(self._exit_fd)
            self._exit_fd = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 1.0)
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        if self._drain is not None:
            self._drain.cancel()
            await asyncio.gather(self._drain, return_exceptions=True)


async def _unreachable(netns: int, networks: Sequence[str]) -> None:
    """Unreachable routes to ``networks`` in the network namespace open as ``netns``."""
    if not networks:
        return
    commands = "".join(f"route add unreachable {network}\n" for network in networks)
    try:
        proc = await asyncio.create_subprocess_exec(
            "nsenter", f"--net=/proc/self/fd/{netns}", "--", ip_path(), "-batch", "-",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            pass_fds=(netns,),
        )  # fmt: skip
    except OSError as exc:
        raise SandboxUnavailableError(f"cannot deny networks in the sandbox: {exc}") from exc
    _, err = await proc.communicate(commands.encode())
    if proc.returncode != 0:
        reason = err.decode(errors="replace").strip()
        raise SandboxUnavailableError(f"cannot deny networks in the sandbox: {reason}")


def ip_path() -> str:
    """Where iproute2's `ip` is (SandboxUnavailableError naming the install if missing)."""
    return required_tool(
        "ip",
        "iproute2",
        "or set DEEPFAAS_SANDBOX_DENY= to deny sandboxed functions no network",
        also=("/usr/sbin/ip", "/sbin/ip"),
    )


async def _read_fd(fd: int, enough: Callable[[bytes], bool]) -> bytes:
    """What a pipe holds once ``enough`` says so, or at its end; read by the event loop as it
    comes (no thread left blocked on an fd that is closed after a timeout)."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    done: asyncio.Future[bytes] = loop.create_future()
    data = bytearray()

    def readable() -> None:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            if not done.done():
                done.set_exception(exc)
            return
        data.extend(chunk)
        if (not chunk or enough(bytes(data))) and not done.done():
            done.set_result(bytes(data))

    loop.add_reader(fd, readable)
    try:
        return await done
    finally:
        loop.remove_reader(fd)


def _parses(data: bytes) -> bool:
    """Whether ``data`` is a whole JSON document (bwrap's info: the sandbox's processes may hold
    the fd open, so its end may never come)."""
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


def _json(data: bytes) -> dict[str, Any]:
    try:
        found = json.loads(data)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


async def _discard(proc: asyncio.subprocess.Process) -> None:
    """Read slirp4netns's stderr (its start-up lines) so that it never blocks on a full pipe."""
    if proc.stderr is not None:
        while await proc.stderr.read(4096):
            pass


async def _stderr_of(proc: asyncio.subprocess.Process) -> str:
    if proc.stderr is None:
        return ""
    with contextlib.suppress(TimeoutError):
        data = await asyncio.wait_for(proc.stderr.read(2000), 1.0)
        return data.decode(errors="replace").strip()
    return ""
