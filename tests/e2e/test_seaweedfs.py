"""The platform on a real SeaweedFS: uploads through the gateway or straight into SeaweedFS
become exactly one activation each, across the platform's downtime and a SIGKILL of its bridge;
`deepfaas up` runs its own SeaweedFS when given none.

The session's SeaweedFS (`seaweed`) stands for an existing one (`DEEPFAAS_STORAGE_S3_ENDPOINT` +
`DEEPFAAS_STORAGE_SEAWEEDFS_FILER`); the bridge runs as its own process
(`deepfaas storage-bridge`), so a test can kill it mid-stream.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from minio import Minio

from eventbus.connection import Bus
from eventbus.server import EmbeddedNats
from eventbus.storage.seaweedfs import EmbeddedSeaweed
from tests.e2e.test_faults import bucket_keys, ready_instances
from tests.eventbus.test_storage_events import bucket_events
from tests.support import Platform, embedded_nats, start_platform, wait_for

ECHO = """
def main(params: dict, ctx) -> dict:
    return {"key": params["object"]["key"]}
"""
ROOT = Path(__file__).resolve().parents[2]
# platform restarts and SeaweedFS's own start and graceful stop take long on a loaded machine
pytestmark = pytest.mark.timeout(300)


def storage_env(seaweed: EmbeddedSeaweed) -> dict[str, str]:
    return {
        "storage_backend": "seaweedfs",
        "storage_s3_endpoint": seaweed.s3_endpoint,
        "storage_seaweedfs_filer": seaweed.filer,
        "storage_s3_access_key": seaweed.access_key,
        "storage_s3_secret_key": seaweed.secret_key,
        "storage_s3_secure": "false",
    }


@dataclass
class SeaweedPlatform:
    """`deepfaas up` on the session's SeaweedFS, and its storage bridge as a process."""

    nats: EmbeddedNats
    seaweed: EmbeddedSeaweed
    data_dir: Path
    platform: Platform | None = None
    bridges: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> None:
        settings = {**storage_env(self.seaweed), "storage_bridge": "false"}
        self.platform = start_platform(self.nats, self.data_dir, **settings)
        self.start_bridge()

    def start_bridge(self) -> None:
        """Start `deepfaas storage-bridge` and wait until it follows the filer."""
        log_path = self.data_dir / "bridge.log"
        before = following(log_path)
        env = {
            **os.environ,
            **{f"DEEPFAAS_{k.upper()}": v for k, v in storage_env(self.seaweed).items()},
            "DEEPFAAS_NATS_URL": self.nats.url,
            "DEEPFAAS_NATS_CREDENTIALS_DIR": str(self.nats.credentials_dir),
        }
        with (self.data_dir / "bridge.log").open("ab") as log:
            self.bridges.append(
                subprocess.Popen(
                    [sys.executable, "-m", "cli", "storage-bridge"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=ROOT,
                )
            )
        wait_for(lambda: following(log_path) > before, timeout=60, interval=0.1)

    def kill_bridge(self) -> None:
        self.bridges[-1].send_signal(signal.SIGKILL)
        self.bridges[-1].wait()

    def stop(self) -> None:
        for proc in self.bridges:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
        if self.platform is not None:
            self.platform.stop()

    def client(self) -> httpx.Client:
        assert self.platform is not None
        return self.platform.client()


def following(log_path: Path) -> int:
    """How many bridges have started following the filer, by their log."""
    if not log_path.exists():
        return 0
    return log_path.read_text(errors="replace").count("SeaweedFS bridge following")


@pytest.fixture(scope="module")
def sw(
    nats_server: EmbeddedNats, seaweed: EmbeddedSeaweed, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SeaweedPlatform]:
    started = SeaweedPlatform(nats_server, seaweed, Path(tmp_path_factory.mktemp("platform")))
    started.start()
    yield started
    started.stop()


def s3(seaweed: EmbeddedSeaweed) -> Minio:
    """A client straight to SeaweedFS, as another service would upload."""
    return Minio(
        seaweed.s3_endpoint,
        access_key=seaweed.access_key,
        secret_key=seaweed.secret_key,
        secure=False,
    )


def watch(client: httpx.Client, bucket: str, fn: str, *, out: str) -> None:
    """``fn`` (ECHO) runs on every object written to ``bucket``, its result going to ``out``."""
    for name in (bucket, out):
        assert client.put(f"/v1/buckets/{name}").status_code in (200, 201)
    client.put(
        f"/v1/functions/{fn}",
        json={"handler": "main", "code": ECHO, "min_scale": 1, "max_scale": 2, "concurrency": 16},
    ).raise_for_status()
    client.post(
        "/v1/triggers",
        json={
            "name": f"t-{fn}",
            "function": fn,
            "bucket": bucket,
            "output": {"bucket": out, "key_template": "{key}.json"},
        },
    ).raise_for_status()
    ready_instances(client, fn, 1)


def activations(client: httpx.Client, fn: str) -> list[dict[str, Any]]:
    """Every activation of ``fn``, page after page."""
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"function": fn, "limit": 200}
    while True:
        r = client.get("/v1/activations", params=params)
        r.raise_for_status()
        found += r.json()
        if "x-next-after" not in r.headers:
            return found
        params["after"] = r.headers["x-next-after"]


def exactly_once(
    client: httpx.Client,
    fn: str,
    out: str,
    names: list[str],
    *,
    nats: EmbeddedNats | None = None,
    bucket: str = "",
) -> None:
    """One successful activation of ``fn`` per name, and its output, no more."""
    try:
        wait_for(lambda: len(bucket_keys(client, out)) >= len(names), timeout=120, interval=0.5)
    except AssertionError:
        records = activations(client, fn)
        errors = {r.get("error") for r in records if r["status"] != "success"}
        missing = sorted({f"{n}.json" for n in names} - set(bucket_keys(client, out)))
        announced = asyncio.run(storage_subjects(nats, bucket)) if nats else None
        raise AssertionError(
            f"{len(records)} activations, errors {errors}, outputs missing: {missing[:10]}, "
            f"storage events: {announced and len(announced)}, of the missing: "
            f"{announced and [m for m in missing if m.removesuffix('.json') in announced]}"
        ) from None

    time.sleep(1.0)  # anything extra would show up now
    assert sorted(bucket_keys(client, out)) == sorted(f"{n}.json" for n in names)
    records = activations(client, fn)
    assert len(records) == len({r["id"] for r in records}) == len(names)
    assert all(r["status"] == "success" for r in records)


async def storage_subjects(nats: EmbeddedNats, bucket: str) -> list[str]:
    """The keys of every storage event of ``bucket`` on the bus."""
    bus = await Bus.connect(nats.admin_url, name="test-seaweedfs")
    try:
        return [event.subject or "" for event in await bucket_events(bus, bucket)]
    finally:
        await bus.close()


def test_uploads_while_the_platform_is_down_run_once_each_after(sw: SeaweedPlatform) -> None:
    with sw.client() as client:
        watch(client, "sw-down", "echo-down", out="sw-down-out")
    sw.stop()
    direct = s3(sw.seaweed)
    names = [f"d/{i:03d} file.txt" for i in range(100)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: direct.put_object("sw-down", n, io.BytesIO(b"x"), 1), names))
    sw.start()
    with sw.client() as client:
        exactly_once(client, "echo-down", "sw-down-out", names, nats=sw.nats, bucket="sw-down")


def test_a_killed_bridge_misses_nothing_and_repeats_nothing(sw: SeaweedPlatform) -> None:
    with sw.client() as client:
        watch(client, "sw-kill", "echo-kill", out="sw-kill-out")
    direct = s3(sw.seaweed)
    names = [f"k{i:03d}" for i in range(500)]
    done = threading.Semaphore(0)

    def put(name: str) -> None:
        direct.put_object("sw-kill", name, io.BytesIO(name.encode()), len(name))
        done.release()

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        uploads = [pool.submit(put, n) for n in names]
        for _ in range(150):
            done.acquire(timeout=60)
        sw.kill_bridge()  # mid-stream: uploads go on
        for _ in range(150):
            done.acquire(timeout=60)
        sw.start_bridge()
        for future in uploads:
            future.result()
    with sw.client() as client:
        exactly_once(client, "echo-kill", "sw-kill-out", names, nats=sw.nats, bucket="sw-kill")


def test_up_runs_its_own_seaweedfs_and_stops_it(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    data = tmp_path / "own"
    # its own bus too: the module's platform would run this one's workers (one controller leads)
    platform = start_platform(embedded_nats(data), data, storage_backend="seaweedfs")
    try:
        with platform.client() as client:
            watch(client, "own-in", "echo-own", out="own-out")
            r = client.put("/v1/buckets/own-in/objects/a b.txt", content=b"hello")
            assert r.status_code == 201, r.text
            exactly_once(client, "echo-own", "own-out", ["a b.txt"])
            assert client.get("/v1/buckets/own-in/objects/a b.txt").content == b"hello"
            [record] = activations(client, "echo-own")
            result = client.get(f"/v1/activations/{record['id']}/result").json()["result"]
            assert result == {"key": "a b.txt"}
    finally:
        platform.stop()
    # stopped by itself, weed included, in the harness's 30 s (not SIGKILLed by it)
    assert platform.process.returncode == 0, platform.process.returncode
    own = data / "seaweedfs"
    assert "weed" in (own / "weed.log").read_text(errors="replace")
    assert (own / "s3.json").stat().st_mode & 0o777 == 0o600
    assert not weed_processes(own), "weed outlived the platform"


def weed_processes(data_dir: Path) -> list[int]:
    """Pids of running `weed` processes with their data in ``data_dir``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"-dir={data_dir}".encode() in cmdline:
            found.append(int(proc.name))
    return found


def test_a_missing_weed_binary_is_one_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DEEPFAAS_DATA_DIR": str(tmp_path),
        "DEEPFAAS_STORAGE_BACKEND": "seaweedfs",
        "DEEPFAAS_STORAGE_SEAWEEDFS_BIN": str(tmp_path / "no" / "weed"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "cli", "up"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"deepfaas: SeaweedFS binary {tmp_path / 'no' / 'weed'} does not exist"
    ]


FETCH = """
import urllib.request
def main(args):
    out = {}
    for url in args["urls"]:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                out[url] = response.read(100).decode(errors="replace")
        except Exception as exc:
            out[url] = f"refused: {type(exc).__name__}: {exc}"
    return out
"""


def test_a_tenants_function_cannot_read_the_filer(sw: SeaweedPlatform) -> None:
    """SeaweedFS's filer serves every bucket over HTTP on loopback, with no credentials (the
    test process reads an object of `default` there). A function of another namespace asking
    the same URL, or the host's loopback through slirp's gateway address, gets nothing: before
    the sandbox had a network of its own, this read `default`'s object."""
    assert sw.platform is not None
    direct = f"http://{sw.seaweed.filer}/buckets/sw-secret/plans.txt"
    via_gateway = f"http://10.0.2.2:{sw.seaweed.filer_port}/buckets/sw-secret/plans.txt"
    with sw.client() as client:
        assert client.put("/v1/buckets/sw-secret").status_code in (200, 201)
        put = client.put("/v1/buckets/sw-secret/objects/plans.txt", content=b"the plans")
        assert put.is_success, put.text
        key = client.post("/v1/auth/keys", json={"namespace": "sw-tenant"}).json()["key"]
    assert httpx.get(direct, timeout=10).content == b"the plans"  # the filer serves it
    with sw.platform.client(auth=key) as tenant:
        code = {"handler": "main", "code": FETCH}
        tenant.put("/v1/functions/fetch", json=code).raise_for_status()
        r = tenant.post("/v1/functions/fetch/invoke", json={"urls": [direct, via_gateway]})
    assert r.status_code == 200, r.text
    assert len(r.json()) == 2 and all(v.startswith("refused") for v in r.json().values()), r.json()
