"""Before/after on a loaded machine: two platforms side by side, measured in alternation.

`python -m bench.pair --a DEEPFAAS_UVLOOP=false --b "" --rounds 5` starts platform A and
platform B, each on a nats-server of its own and with its own settings (or ``--a-source DIR``
to run another copy of the code, e.g. ``git archive HEAD~1 | tar -x -C DIR``), then runs short
loads on A and B in turn, swapping who goes first each round, so both see the same noise from
the other processes on the machine. It prints the median over rounds of each figure beside
the floors measured in the same rounds, and the CPU time per request of each side's processes
(platform tree + its nats-server), which other load bends least.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
from pathlib import Path

from bench.bus_throughput import bus_throughput
from bench.loadgen import http_load, nats_load
from bench.throughput import async_throughput, counts
from eventbus.server import EmbeddedNats, free_port
from tests.support import Platform, start_platform, wait_for

NOOP = "def main(params):\n    return params\n"
BODY = b'{"x": 1}'


def _settings(text: str) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in text.split(",") if item]
    return {key.removeprefix("DEEPFAAS_").lower(): value for key, value in pairs}


def _platform(nats: EmbeddedNats, data_dir: Path, settings: str, source: str | None) -> Platform:
    plat = start_platform(
        nats,
        data_dir,
        source=Path(source) if source else None,
        ns_rate_per_s=1_000_000,
        ns_burst=1_000_000,
        **_settings(settings),
    )
    with plat.client() as client:
        spec = {"handler": "main", "code": NOOP, "min_scale": 1, "max_scale": 1}
        client.put("/v1/functions/noop", json={**spec, "concurrency": 64}).raise_for_status()
        wait_for(lambda: client.post("/v1/functions/noop/invoke", json={}).status_code == 200, 120)
    return plat


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) ``pid`` and its live descendants have used."""
    from bench.memory_bench import descendants

    total = 0.0
    for each in (pid, *descendants(pid)):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _round(plat: Platform, nats: EmbeddedNats, seconds: float) -> dict[str, float]:
    """One round on one side. CPU ms per request (platform processes + nats-server) is the
    figure least bent by other load on the machine; latencies are printed beside it."""
    figures: dict[str, float] = {}
    nats_url = nats.admin_url
    pids = [plat.process.pid, nats.process.pid if nats.process else plat.process.pid]
    for c in (1, 32):
        before = sum(cpu_s(pid) for pid in pids)
        r = http_load(
            "",
            plat.auth_url,
            "/v1/functions/noop/invoke",
            BODY,
            concurrency=c,
            seconds=seconds,
            warmup=0.2,
        )
        figures[f"sync c={c} p50 ms"] = r.p50_ms
        figures[f"sync c={c} p99 ms"] = r.p99_ms
        figures[f"sync c={c} req/s"] = r.rps
        figures[f"sync c={c} errors"] = r.errors
        used = sum(cpu_s(pid) for pid in pids) - before
        figures[f"sync c={c} CPU ms/req"] = used * 1000 / max(1, r.requests)
    before = sum(cpu_s(pid) for pid in pids)
    rate, lines = asyncio.run(async_throughput(plat.auth_url, nats_url, seconds, prefix=""))
    figures["async accepted->completed /s"] = rate
    used = sum(cpu_s(pid) for pid in pids) - before
    accepted = counts(lines[-1])[1]
    figures["async CPU ms/activation"] = used * 1000 / max(1, accepted)
    before = sum(cpu_s(pid) for pid in pids)
    rate, _ = asyncio.run(bus_throughput(nats_url, n=int(2_000 * seconds)))
    figures["bus async completed /s"] = rate
    used = sum(cpu_s(pid) for pid in pids) - before
    figures["bus async CPU ms/activation"] = used * 1000 / int(2_000 * seconds)
    return figures


def main() -> None:
    """Parse the two sides, run the rounds, print medians."""
    parser = argparse.ArgumentParser(prog="python -m bench.pair")
    parser.add_argument("--a", default="", help="A's settings, K=V,K=V (DEEPFAAS_ optional)")
    parser.add_argument("--b", default="", help="B's settings")
    parser.add_argument("--a-source", default=None, help="run A from this copy of the code")
    parser.add_argument("--b-source", default=None, help="run B from this copy of the code")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.5)
    args = parser.parse_args()
    # a SIGTERM (a timeout) unwinds through `finally`: the platforms stop with this process
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory() as tmp:
        nats = EmbeddedNats(store_dir=Path(tmp) / "nats", port=free_port()).start()
        from bench.__main__ import _spawn, _wait_http

        responder = _spawn("nats", nats.admin_url, "floor.echo")
        asgi_port = free_port()
        asgi = _spawn("asgi", str(asgi_port))
        # each side its own nats-server: two platforms on one bus would share functions,
        # workers and the controller's lease
        other = EmbeddedNats(store_dir=Path(tmp) / "nats-b", port=free_port()).start()
        buses = {"A": nats, "B": other}
        sides: dict[str, Platform] = {}
        runs: dict[str, list[dict[str, float]]] = {"A": [], "B": [], "floor": []}
        try:
            sides["A"] = _platform(nats, Path(tmp) / "a", args.a, args.a_source)
            sides["B"] = _platform(other, Path(tmp) / "b", args.b, args.b_source)
            _wait_http(f"http://127.0.0.1:{asgi_port}/")
            for n in range(args.rounds):
                order = ("A", "B") if n % 2 == 0 else ("B", "A")
                floors: dict[str, float] = {}
                for c in (1, 32):
                    nf = nats_load(
                        "",
                        nats.admin_url,
                        "floor.echo",
                        BODY,
                        concurrency=c,
                        seconds=args.seconds / 2,
                        warmup=0.1,
                    )
                    hf = http_load(
                        "",
                        f"http://127.0.0.1:{asgi_port}",
                        "/",
                        BODY,
                        concurrency=c,
                        seconds=args.seconds / 2,
                        warmup=0.1,
                    )
                    floors[f"floor NATS+HTTP c={c} p50 ms"] = nf.p50_ms + hf.p50_ms
                runs["floor"].append(floors)
                for side in order:
                    runs[side].append(_round(sides[side], buses[side], args.seconds))
                _summary(args, runs)
        finally:
            for plat in sides.values():
                plat.stop()
            responder.terminate()
            asgi.terminate()
            other.stop()
            nats.stop()


def _summary(args: argparse.Namespace, runs: dict[str, list[dict[str, float]]]) -> None:
    """Medians so far (printed after every round: a run cut short still says something)."""
    rounds = len(runs["A"])
    print(f"A: {args.a_source or 'this tree'} {args.a or '(defaults)'}")
    print(f"B: {args.b_source or 'this tree'} {args.b or '(defaults)'}")
    print(f"medians over {rounds} rounds of {args.seconds:g} s each:")
    for key in runs["floor"][0]:
        print(f"  {key:<34} {statistics.median(r[key] for r in runs['floor']):10.3f}")
    for key in runs["A"][0]:
        a = statistics.median(r[key] for r in runs["A"])
        b = statistics.median(r[key] for r in runs["B"])
        ratio = f"B/A {b / a:5.2f}" if a else ""
        print(f"  {key:<34} A {a:10.3f}   B {b:10.3f}   {ratio}", flush=True)


if __name__ == "__main__":
    main()
