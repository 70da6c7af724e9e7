"""Storage: upload -> function start latency, and upload throughput of a large file.

Both run against a fresh platform (local storage backend, embedded NATS) in a temporary
folder. The latency figure is end to end: ``t0`` is taken just before the client sends the
PUT, ``t1`` is ``time.time()`` at the entry of the triggered function, which returns it (with
its key) in its result; the completion events on ``activation.completed`` carry it
back. Uploads go one at a time (each waits for its function to start and finish), so the
figure is latency, not queueing. Floors in the same run: the same PUT to a bucket no trigger
watches, and raw NATS request-reply. Throughput streams a file from disk with ``sendfile``
(the client costs next to nothing) beside a plain copy of the same file.

Usage: python -m bench.storage_bench [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from eventbus.server import EmbeddedNats
from tests.support import Platform, eventually, start_platform, wait_for

FUNCTION = "stamp"
#: the handler stamps its own entry time first, then names the object it was given
STAMP = (
    "import time\n"
    "def main(params, ctx):\n"
    "    t = time.time()\n"
    "    return {'t': t, 'key': params['object']['key']}\n"
)
WATCHED, PLAIN, BULK = "inputs", "plain", "bulk"
SMALL = 1024
MIB = 1024 * 1024
GIB = 1024 * MIB
COMPLETED = "activation.completed"
TARGET_P50_MS = 20.0


def _pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (NaN when empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(seconds: float, *, backend: str = "local", throughput: bool = True) -> list[str]:
    """Upload -> function start p50/p99 for 1 KiB files, and MB/s of a 1 GiB upload.

    ``backend="seaweedfs"`` runs the platform on its own SeaweedFS: the PUT goes through the
    gateway into SeaweedFS and the storage event comes from the filer's log (the bridge).
    """
    n = max(200, min(500, int(seconds * 100)))
    with tempfile.TemporaryDirectory(prefix="storage-bench-") as tmp:
        root = Path(tmp)
        nats = EmbeddedNats(store_dir=root / "nats").start()
        plat: Platform | None = None
        try:
            plat = start_platform(nats, root / "platform", storage_backend=backend)
            _deploy(plat)
            lines = asyncio.run(_latency(plat.auth_url, nats.admin_url, n))
            if throughput:
                lines.append(_throughput(plat.auth_url, root / "files"))
            return [f"[{backend}] {line}" for line in lines]
        finally:
            if plat is not None:
                plat.stop()
            nats.stop()


def backends(seconds: float) -> list[str]:
    """Upload -> function start on SeaweedFS (events from its filer) beside the local backend."""
    return run(seconds, throughput=False) + run(seconds, backend="seaweedfs", throughput=False)


def _deploy(plat: Platform) -> None:
    """The stamping function (one warm worker), three buckets, a trigger on one of them."""
    with plat.client() as client:
        client.put(
            f"/v1/functions/{FUNCTION}",
            json={
                "handler": "main",
                "code": STAMP,
                "min_scale": 1,
                "max_scale": 1,
                "concurrency": 8,
            },
        ).raise_for_status()
        for bucket in (WATCHED, PLAIN, BULK):
            client.put(f"/v1/buckets/{bucket}").raise_for_status()
        client.post(
            "/v1/triggers", json={"name": "stamp-inputs", "function": FUNCTION, "bucket": WATCHED}
        ).raise_for_status()
        warm = {"object": {"key": "warm"}}
        wait_for(
            lambda: client.post(f"/v1/functions/{FUNCTION}/invoke", json=warm).status_code == 200,
            timeout=60,
        )


async def _latency(url: str, nats_url: str, n: int) -> list[str]:
    """Sequential triggered uploads, then the floors; the lines that report them."""
    import nats as nats_client

    nc = await nats_client.connect(nats_url)
    pending: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def on_completed(msg: Any) -> None:
        data = orjson.loads(msg.data)
        result = data.get("result")
        key = result.get("key") if isinstance(result, dict) else None
        future = pending.pop(key, None) if isinstance(key, str) else None
        if future is not None and not future.done():
            future.set_result(data)

    await nc.subscribe(COMPLETED, cb=on_completed)
    await nc.flush()
    body = os.urandom(SMALL)
    headers = {"content-type": "application/octet-stream"}
    loop = asyncio.get_running_loop()
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:

            async def upload(key: str, timeout: float) -> tuple[float, float, dict[str, Any]]:
                """(t0, PUT ms, completion data) of one triggered upload."""
                future: asyncio.Future[dict[str, Any]] = loop.create_future()
                pending[key] = future
                t0 = time.time()
                response = await client.put(
                    f"/v1/buckets/{WATCHED}/objects/{key}", content=body, headers=headers
                )
                put_ms = (time.time() - t0) * 1000
                response.raise_for_status()
                try:
                    return t0, put_ms, await asyncio.wait_for(future, timeout)
                finally:
                    pending.pop(key, None)

            # The first run also starts a worker: retry until one fires.
            attempts = itertools.count()

            async def fired() -> bool:
                with contextlib.suppress(TimeoutError):
                    await upload(f"warm/first-{next(attempts)}", 2.0)
                    return True
                return False

            await eventually(fired, timeout=60, interval=0)
            for i in range(20):
                await upload(f"warm/{i}", 10.0)

            starts: list[float] = []
            puts: list[float] = []
            waits: list[float] = []
            missed = 0
            for i in range(n):
                try:
                    t0, put_ms, done = await upload(f"lat/{i:05d}.bin", 10.0)
                except TimeoutError:
                    missed += 1
                    continue
                starts.append((done["result"]["t"] - t0) * 1000)
                puts.append(put_ms)
                if isinstance(done.get("wait_ms"), int | float):
                    waits.append(float(done["wait_ms"]))

            plain: list[float] = []
            for i in range(n):
                t0 = time.perf_counter()
                response = await client.put(
                    f"/v1/buckets/{PLAIN}/objects/lat/{i:05d}.bin", content=body, headers=headers
                )
                plain.append((time.perf_counter() - t0) * 1000)
                response.raise_for_status()
        nats_rr = await _nats_request_reply(nc, nats_url, n)
    finally:
        await nc.close()

    p50 = _pct(starts, 0.5)
    verdict = "met" if p50 < TARGET_P50_MS else "NOT met"
    return [
        f"upload->function start (1 KiB, n={len(starts)}, missed {missed}): "
        f"p50 {p50:.2f} ms p99 {_pct(starts, 0.99):.2f} ms  | floors: PUT alone "
        f"p50 {_pct(plain, 0.5):.2f} ms (p99 {_pct(plain, 0.99):.2f}), NATS req-reply "
        f"p50 {_pct(nats_rr, 0.5):.3f} ms (target p50 < {TARGET_P50_MS:g} ms: {verdict})",
        f"  of which: triggered PUT round trip p50 {_pct(puts, 0.5):.2f} ms "
        f"p99 {_pct(puts, 0.99):.2f} ms; invocation accepted->start (wait_ms) "
        f"p50 {_pct(waits, 0.5):.2f} ms p99 {_pct(waits, 0.99):.2f} ms",
    ]


async def _nats_request_reply(nc: Any, nats_url: str, n: int) -> list[float]:
    """Round trips (ms) of ``n`` sequential requests to a no-op responder on its own connection."""
    import nats as nats_client

    responder = await nats_client.connect(nats_url)

    async def echo(msg: Any) -> None:
        await msg.respond(b"{}")

    await responder.subscribe("floor.storage.echo", cb=echo)
    await responder.flush()
    try:
        for _ in range(50):
            await nc.request("floor.storage.echo", b"{}", timeout=5)
        lat: list[float] = []
        for _ in range(n):
            t0 = time.perf_counter()
            await nc.request("floor.storage.echo", b"{}", timeout=5)
            lat.append((time.perf_counter() - t0) * 1000)
        return lat
    finally:
        await responder.close()


def _throughput(url: str, folder: Path) -> str:
    """Best of two uploads of one large random file beside best of two plain copies of it."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    size = GIB if free >= 4 * GIB else 256 * MIB
    note = "" if size == GIB else f" (256 MiB: only {free / GIB:.1f} GiB free)"
    source, copy = folder / "source.bin", folder / "copy.bin"
    try:
        with source.open("wb") as out:
            for _ in range(size // MIB):
                out.write(os.urandom(MIB))
        copy_s: list[float] = []
        synced_s: list[float] = []
        upload_s: list[float] = []
        for round_ in range(2):
            t0 = time.perf_counter()
            shutil.copyfile(source, copy)
            copy_s.append(time.perf_counter() - t0)
            fd = os.open(copy, os.O_RDONLY)
            try:
                os.fsync(fd)  # the local store fsyncs each object before it answers
            finally:
                os.close(fd)
            synced_s.append(time.perf_counter() - t0)
            copy.unlink()
            upload_s.append(_sendfile_put(url, f"/v1/buckets/{BULK}/objects/big-{round_}", source))
            httpx.delete(f"{url}/v1/buckets/{BULK}/objects/big-{round_}", timeout=60)
    finally:
        source.unlink(missing_ok=True)
        copy.unlink(missing_ok=True)

    def mbs(elapsed: list[float]) -> float:
        return size / min(elapsed) / 1e6

    label = "1 GiB" if size == GIB else "256 MiB"
    return (
        f"upload {label} via gateway: {mbs(upload_s):,.0f} MB/s{note}  | floor: file copy "
        f"{mbs(copy_s):,.0f} MB/s, copy+fsync {mbs(synced_s):,.0f} MB/s (best of 2 each)"
    )


def _sendfile_put(url: str, path: str, source: Path) -> float:
    """PUT ``source`` with a Content-Length over one connection; seconds to the full answer."""
    userinfo, _, hostport = url.removeprefix("http://").rpartition("@")
    host, port = hostport.split(":")
    size = source.stat().st_size
    auth = base64.b64encode(userinfo.encode()).decode()
    head = (
        f"PUT {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/octet-stream\r\n"
        f"Authorization: Basic {auth}\r\n"
        f"Content-Length: {size}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=600) as sock, source.open("rb") as f:
        t0 = time.perf_counter()
        sock.sendall(head)
        sock.sendfile(f)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        elapsed = time.perf_counter() - t0
    status, _, rest = answer.partition(b"\r\n")
    if not status.startswith((b"HTTP/1.1 200", b"HTTP/1.1 201")):
        raise RuntimeError(f"upload failed: {status!r} {rest[-500:]!r}")
    if orjson.loads(rest.partition(b"\r\n\r\n")[2]).get("size") != size:
        raise RuntimeError(f"upload stored the wrong size: {rest[-500:]!r}")
    return elapsed


def main() -> None:
    """Print the storage figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.storage_bench")
    parser.add_argument("--seconds", type=float, default=3.0, help="sizes the latency run")
    args = parser.parse_args()
    for line in run(args.seconds):
        print(line, flush=True)


if __name__ == "__main__":
    main()
