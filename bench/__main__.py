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
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.bus_throughput import bus_throughput
from bench.cpu import CpuMeter
from bench.loadgen import LoadResult, http_load, nats_load
from bench.throughput import async_throughput, batch_throughput, counts
from eventbus.server import EmbeddedNats, free_port
from tests.support import start_platform, wait_for

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
        responder = _spawn("nats", nats.admin_url, "floor.echo")
        asgi_port = free_port()
        asgi = _spawn("asgi", str(asgi_port))
        # the per-namespace rate limit (1,000/s by default) would cap what this measures
        plat = start_platform(
            nats, Path(tmp) / "platform", ns_rate_per_s=1_000_000, ns_burst=1_000_000
        )
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
            meter = CpuMeter(plat.process.pid, nats.process.pid if nats.process else None)
            budgets: list[str] = []
            for c in (1, 32):
                results.append(
                    nats_load(
                        "floor: raw NATS request-reply",
                        nats.admin_url,
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
                        nats.admin_url,
                        "run.noop",
                        body,
                        headers=ce,
                        concurrency=c,
                        seconds=seconds,
                    )
                )
                before = meter.snapshot()
                results.append(
                    http_load(
                        "sync invoke via gateway",
                        plat.auth_url,
                        "/v1/functions/noop/invoke",
                        body,
                        concurrency=c,
                        seconds=seconds,
                    )
                )
                if c == 32:
                    done = results[-1]
                    # the CPU covers the load's warm-up too (0.5 s): count its requests as well
                    served = round(done.requests + done.rps * 0.5)
                    budgets.append(meter.line(before, served, "sync c=32", done.rps))
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
            before = meter.snapshot()
            rate, found = asyncio.run(async_throughput(plat.auth_url, nats.admin_url, seconds))
            lines += found
            budgets.append(meter.line(before, counts(found[-1])[0], "HTTP async", rate))
            before = meter.snapshot()
            rate, found = asyncio.run(batch_throughput(plat.auth_url, nats.admin_url, seconds))
            lines += found
            budgets.append(meter.line(before, counts(found[-1])[0], "batch door", rate))
            before = meter.snapshot()
            rate, found = asyncio.run(bus_throughput(nats.admin_url, n=int(2_000 * seconds)))
            lines += found
            budgets.append(meter.line(before, counts(found[-1])[0], "bus-published", rate))
            lines += budgets
        finally:
            plat.stop()
            responder.terminate()
            asgi.terminate()
            nats.stop()
    return lines


def rank(_: float) -> list[str]:
    """Rank time for 1,000 sites."""
    from bench import rank_bench

    figures = rank_bench.run(n_sites=1000, repeats=50)
    return [f"rank 1,000 sites: p50 {figures['p50_ms']:.3f} ms, p99 {figures['p99_ms']:.3f} ms"]


def dispatch(seconds: float) -> list[str]:
    """Events dispatched/s with 1 and with 10,000 triggers."""
    from bench import dispatch_bench

    return dispatch_bench.run(seconds)


def storage(seconds: float) -> list[str]:
    """Upload-to-function-start latency and 1 GiB upload throughput."""
    from bench import storage_bench

    return storage_bench.run(seconds)


def backends(seconds: float) -> list[str]:
    """Upload-to-function-start latency on SeaweedFS beside the local backend (same run)."""
    from bench import storage_bench

    return storage_bench.backends(seconds)


def models(seconds: float) -> list[str]:
    """Warm inference images/s beside in-process predict; inference worker cold start."""
    from bench import models_bench

    return models_bench.run(seconds)


def coldstart(_: float) -> list[str]:
    """Cold start on the local provider, spawned vs prewarmed, beside process/NATS floors."""
    from bench import coldstart_bench

    return coldstart_bench.run(n=30)


def sandbox(seconds: float) -> list[str]:
    """Warm sync invokes and prewarmed cold starts with the sandbox on beside off."""
    from bench import sandbox_bench

    return sandbox_bench.run(seconds)


def cluster(seconds: float) -> list[str]:
    """Async throughput and sync latency on a 3-node NATS cluster (R3) beside one server."""
    from bench import cluster_bench

    return cluster_bench.run(seconds)


def memory(seconds: float) -> list[str]:
    """USS per warm no-op worker (and its runner), and how many fit in 4 GiB."""
    from bench import memory_bench

    return memory_bench.run(seconds)


SUITES = {
    "core": core,
    "sandbox": sandbox,
    "dispatch": dispatch,
    "storage": storage,
    "backends": backends,
    "rank": rank,
    "models": models,
    "coldstart": coldstart,
    "memory": memory,
    "cluster": cluster,
}


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
