"""`make bench`: every figure beside its floor, measured in the same run on this machine.

Usage: python -m bench [--seconds S] [--only core,rank]
"""

from __future__ import annotations

import argparse
import asyncio
import platform as host
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson

from bench.harness import start_platform, wait_for
from bench.loadgen import LoadResult, http_load, nats_load
from eventbus.server import EmbeddedNats, free_port

NOOP = "def main(params):\n    return params\n"


def _spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.floors", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_http(url: str) -> None:
    wait_for(lambda: _ok(url), timeout=20)


def _ok(url: str) -> bool:
    try:
        return httpx.post(url, content=b"{}", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def core(seconds: float) -> list[str]:
    """Sync invoke through the gateway and through NATS, floors, async throughput."""
    lines: list[str] = []
    results: list[LoadResult] = []
    with tempfile.TemporaryDirectory() as tmp:
        nats = EmbeddedNats(store_dir=Path(tmp) / "nats").start()
        responder = _spawn("nats", nats.url, "floor.echo")
        asgi_port = free_port()
        asgi = _spawn("asgi", str(asgi_port))
        plat = start_platform(nats, Path(tmp) / "platform")
        try:
            _wait_http(f"http://127.0.0.1:{asgi_port}/")
            with plat.client() as client:
                client.put(
                    "/v1/functions/noop",
                    json={
                        "handler": "main",
                        "code": NOOP,
                        "min_scale": 1,
                        "max_scale": 1,
                        "concurrency": 64,
                    },
                ).raise_for_status()
                wait_for(
                    lambda: client.post("/v1/functions/noop/invoke", json={}).status_code == 200
                )
            body = b'{"x": 1}'
            ce = {
                "ce-specversion": "1.0",
                "ce-id": "bench",
                "ce-source": "/bench",
                "ce-type": "io.deepfaas.invocation.requested",
                "ce-subject": "noop",
                "ce-datacontenttype": "application/json",
                "ce-mode": "sync",
            }
            for c in (1, 32):
                results.append(
                    nats_load(
                        "floor: raw NATS request-reply",
                        nats.url,
                        "floor.echo",
                        body,
                        concurrency=c,
                        seconds=seconds,
                    )
                )
                results.append(
                    http_load(
                        "floor: bare ASGI (uvicorn+httptools)",
                        f"http://127.0.0.1:{asgi_port}",
                        "/",
                        body,
                        concurrency=c,
                        seconds=seconds,
                    )
                )
                results.append(
                    nats_load(
                        "sync invoke via NATS (run.noop)",
                        nats.url,
                        "run.noop",
                        body,
                        headers=ce,
                        concurrency=c,
                        seconds=seconds,
                    )
                )
                results.append(
                    http_load(
                        "sync invoke via gateway",
                        plat.url,
                        "/v1/functions/noop/invoke",
                        body,
                        concurrency=c,
                        seconds=seconds,
                    )
                )
            lines += [r.row() for r in results]
            by = {(r.name, r.concurrency): r for r in results}
            for c in (1, 32):
                floor = (
                    by[("floor: raw NATS request-reply", c)].p50_ms
                    + by[("floor: bare ASGI (uvicorn+httptools)", c)].p50_ms
                )
                gw = by[("sync invoke via gateway", c)].p50_ms
                lines.append(
                    f"gateway sync p50 / (HTTP floor + NATS floor) at c={c}: "
                    f"{gw:.3f} / {floor:.3f} ms = {gw / floor:.2f}x (target <= 3x)"
                )
            lines += asyncio.run(async_throughput(plat.url, nats.url, n=int(2000 * seconds)))
        finally:
            plat.stop()
            responder.terminate()
            asgi.terminate()
            nats.stop()
    return lines


async def async_throughput(url: str, nats_url: str, n: int) -> list[str]:
    """Accepted -> completed rate of async no-op invocations (HTTP in, completion events out)."""
    import nats as nats_client

    nc = await nats_client.connect(nats_url)
    done: set[str] = set()
    finished = asyncio.Event()
    target: set[str] = set()

    async def on_done(msg: object) -> None:
        data = orjson.loads(msg.data)  # type: ignore[attr-defined]
        done.add(data["activation_id"])
        if target and target <= done:
            finished.set()

    await nc.subscribe("events.activation.completed", cb=on_done)
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        sem = asyncio.Semaphore(32)

        async def send() -> str:
            async with sem:
                r = await client.post(
                    "/v1/functions/noop/invoke?async=true",
                    content=b"{}",
                    headers={"content-type": "application/json"},
                )
                return str(r.json()["activation_id"])

        t0 = time.perf_counter()
        ids = await asyncio.gather(*(send() for _ in range(n)))
        accepted_s = time.perf_counter() - t0
        target.update(ids)
        if not target <= done:
            await asyncio.wait_for(finished.wait(), 300)
        total_s = time.perf_counter() - t0
    await nc.close()
    return [
        f"async no-op, {n} invocations over HTTP (c=32): accepted {n / accepted_s:,.0f}/s, "
        f"accepted->completed {n / total_s:,.0f}/s (target >= 2,000/s)"
    ]


def rank(_: float) -> list[str]:
    """Rank time for 1,000 sites."""
    from bench import rank_bench

    figures = rank_bench.run(n_sites=1000, repeats=50)
    return [f"rank 1,000 sites: p50 {figures['p50_ms']:.3f} ms, p99 {figures['p99_ms']:.3f} ms"]


SUITES = {"core": core, "rank": rank}


def main() -> None:
    """Run the suites and print each figure beside its floor."""
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--only", default=",".join(SUITES), help="comma-separated suites")
    args = parser.parse_args()
    print(f"# deepfaas bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"# {host.node()} {host.machine()} {host.system()} {host.release()}, "
        f"Python {host.python_version()}, {_cpus()} CPUs"
    )
    for name in args.only.split(","):
        print(f"\n## {name}")
        for line in SUITES[name](args.seconds):
            print(line, flush=True)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
