"""Cold start on the local provider: from "start a worker" to the first result, with and without
the prewarmed pool, beside floors measured in the same run.

Each trial registers a fresh no-op function, scales its runtime from 0 to 1 through
`LocalProvider` (a spawned `python -m runtimes`, or a stem of the pool told what to become),
waits for the worker's ready announcement, and sends one sync invocation over NATS. The figure
is the time from the scale call to the reply; the record's own `init_ms` is printed beside it.
Floors: spawning `python -c pass` to its exit, importing the worker module in a fresh
interpreter, and a raw NATS request-reply.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats
import orjson
from nats.aio.msg import Msg

from eventbus.codec import to_nats
from eventbus.connection import Bus
from eventbus.invocations import new_invocation
from eventbus.server import EmbeddedNats
from eventbus.streams import ensure_consumer, ensure_layout
from eventbus.types import run_subject
from runtimes.control.controller import runtime_spec
from runtimes.providers.local import LocalProvider
from runtimes.specs import FunctionRegistry
from runtimes.types import ActivationRecord, FunctionSpec
from tests.support import eventually

NOOP = "def main(params):\n    return params\n"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def row(name: str, values: list[float], extra: str = "") -> str:
    return (
        f"{name:<44} n={len(values):<3} p50 {pct(values, 0.5):8.1f} ms  "
        f"p99 {pct(values, 0.99):8.1f} ms{extra}"
    )


async def trials(
    nats_url: str,
    data_dir: Path,
    prewarm: int,
    n: int,
    *,
    sandbox: str = "on",
    forks: bool = False,
) -> tuple[list[float], list[float]]:
    """(scale-to-first-result ms, recorded init_ms) for ``n`` cold starts."""
    bus = await Bus.connect(nats_url, name="coldstart-bench")
    await ensure_layout(bus.js)
    env = {
        "DEEPFAAS_NATS_URL": nats_url,
        "DEEPFAAS_DATA_DIR": str(data_dir),
        "DEEPFAAS_STORAGE_ROOT": str(data_dir / "storage"),
        "DEEPFAAS_ACK_WAIT_S": "30",
        "DEEPFAAS_SANDBOX": sandbox,
    }
    provider = LocalProvider(
        env=env, log_dir=data_dir / "logs", prewarm=prewarm, gpus=[], fork_server=forks
    )
    ready: dict[str, asyncio.Event] = {}

    async def on_ready(msg: Msg) -> None:
        body = orjson.loads(msg.data)
        provider.mark_ready(int(body.get("pid", 0)))
        event = ready.get(str(body.get("function", "")))
        if event is not None:
            event.set()

    subs = [
        await bus.nc.subscribe("control.ready.*", cb=on_ready),
        await bus.nc.subscribe("control.stem", cb=on_ready),
    ]
    await provider.start()
    if provider.forks is not None:  # a trial starts once the fork server has imported
        fork_server = provider.forks
        await eventually(lambda: fork_server.ready, timeout=120, interval=0.05)
    registry = FunctionRegistry(bus)
    firsts: list[float] = []
    inits: list[float] = []

    def pool_filled() -> bool:
        return provider.pool is None or provider.pool.ready >= 1

    try:
        for i in range(n):
            name = f"cold-p{prewarm}-{i}"
            spec = await registry.put(FunctionSpec(name=name, handler="main", code=NOOP))
            await ensure_consumer(bus.js, name, ack_wait=30)
            handle = await provider.provision(runtime_spec(spec))
            await eventually(pool_filled, timeout=60, interval=0.01)
            await asyncio.sleep(0.2)  # let the previous trial's worker finish stopping
            ready[name] = asyncio.Event()
            invocation = new_invocation(bus, name, b"{}", source="/bench", mode="sync")
            headers, data = to_nats(invocation)
            t0 = time.perf_counter()
            await provider.scale(handle, 1)
            await asyncio.wait_for(ready[name].wait(), 60)
            reply = await bus.nc.request(run_subject(name), data, headers=headers, timeout=30)
            firsts.append((time.perf_counter() - t0) * 1000)
            record = ActivationRecord.model_validate_json(reply.data)
            assert record.status.value == "success" and record.cold_start, record
            inits.append(record.init_ms or 0.0)
            await provider.release(handle)
    finally:
        for sub in subs:
            await sub.unsubscribe()
        await provider.close()
        await bus.close()
    return firsts, inits


def _spawn_floor(args: list[str], n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True)
        times.append((time.perf_counter() - t0) * 1000)
    return times


async def _nats_floor(url: str, n: int) -> list[float]:
    server = await nats.connect(url)
    client = await nats.connect(url)

    async def echo(msg: Msg) -> None:
        await msg.respond(b"{}")

    await server.subscribe("floor.coldstart", cb=echo)
    await server.flush()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        await client.request("floor.coldstart", b"{}", timeout=5)
        times.append((time.perf_counter() - t0) * 1000)
    await client.close()
    await server.close()
    return times


def run(n: int = 20) -> list[str]:
    """Print-ready lines: cold start p50/p99 with and without the pool, and the floors."""
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        nats_server = EmbeddedNats(store_dir=Path(tmp) / "nats").start()
        try:
            results = {}
            # 0: spawned, 1: a stem of the pool, 2: forked by the fork server (no pool)
            for kind in (0, 1, 2):
                results[kind] = asyncio.run(
                    trials(
                        nats_server.admin_url,
                        Path(tmp) / f"p{kind}",
                        1 if kind == 1 else 0,
                        n,
                        forks=kind == 2,
                    )
                )
            for kind, label in (
                (0, "spawned worker (no pool)"),
                (1, "prewarmed stem (pool of 1)"),
                (2, "forked worker (fork server, no pool)"),
            ):
                firsts, inits = results[kind]
                lines.append(
                    row(
                        f"cold start, {label}",
                        firsts,
                        f"  | recorded init_ms p50 {pct(inits, 0.5):.1f}"
                        f" p99 {pct(inits, 0.99):.1f}",
                    )
                )
            lines.append(
                row("floor: spawn `python -c pass` to exit", _spawn_floor(["-c", "pass"], n))
            )
            lines.append(
                row(
                    "floor: fresh python importing the worker",
                    _spawn_floor(["-c", "import runtimes.worker.main"], n),
                )
            )
            lines.append(
                row(
                    "floor: raw NATS request-reply",
                    asyncio.run(_nats_floor(nats_server.admin_url, 500)),
                )
            )
            p50 = pct(results[1][0], 0.5)
            verdict = "met" if p50 < 20 else "not met"
            lines.append(f"prewarmed cold start p50 {p50:.1f} ms (target < 20 ms: {verdict})")
            p50 = pct(results[2][0], 0.5)
            verdict = "met" if p50 <= 150 else "not met"
            lines.append(f"forked cold start p50 {p50:.1f} ms (target <= 150 ms: {verdict})")
        finally:
            nats_server.stop()
    return lines


if __name__ == "__main__":
    for line in run(int(sys.argv[1]) if len(sys.argv) > 1 else 20):
        print(line, flush=True)
