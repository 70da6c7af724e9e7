"""What the sandbox costs: warm sync invokes and prewarmed cold starts, sandbox on vs off.

Both platforms run on one nats-server in this run, one after the other, with the same load
client, so the difference is the sandbox (one pipe hop each way into a warm runner) and not
the machine's mood.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from bench import coldstart_bench
from bench.loadgen import LoadResult, http_load
from eventbus.server import EmbeddedNats
from tests.support import start_platform, wait_for

NOOP = "def main(params):\n    return params\n"


def _warm(nats: EmbeddedNats, data_dir: Path, sandbox: str, seconds: float) -> list[LoadResult]:
    plat = start_platform(
        nats, data_dir, sandbox=sandbox, ns_rate_per_s=1_000_000, ns_burst=1_000_000
    )
    try:
        with plat.client() as client:
            spec = {"handler": "main", "code": NOOP, "min_scale": 1, "max_scale": 1}
            client.put("/v1/functions/noop", json={**spec, "concurrency": 64}).raise_for_status()
            wait_for(lambda: client.post("/v1/functions/noop/invoke", json={}).status_code == 200)
        return [
            http_load(
                f"sync invoke via gateway, sandbox {sandbox}",
                plat.auth_url,
                "/v1/functions/noop/invoke",
                b'{"x": 1}',
                concurrency=c,
                seconds=seconds,
            )
            for c in (1, 32)
        ]
    finally:
        plat.stop()


def run(seconds: float, trials: int = 20) -> list[str]:
    """Print-ready lines: warm sync p50 with and without the sandbox, and cold starts."""
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        nats = EmbeddedNats(store_dir=Path(tmp) / "nats").start()
        try:
            off = _warm(nats, Path(tmp) / "off", "off", seconds)
            on = _warm(nats, Path(tmp) / "on", "on", seconds)
            lines += [r.row() for r in off + on]
            for a, b in zip(off, on, strict=True):
                lines.append(
                    f"sandbox cost, warm sync p50 at c={a.concurrency}: {b.p50_ms:.3f} - "
                    f"{a.p50_ms:.3f} = {b.p50_ms - a.p50_ms:+.3f} ms (target <= +0.3 ms at c=1)"
                )
            for sandbox in ("off", "on"):
                firsts, inits = asyncio.run(
                    coldstart_bench.trials(
                        nats.admin_url, Path(tmp) / f"cold-{sandbox}", 1, trials, sandbox=sandbox
                    )
                )
                lines.append(
                    coldstart_bench.row(
                        f"cold start, prewarmed stem, sandbox {sandbox}",
                        firsts,
                        f"  | init_ms p50 {coldstart_bench.pct(inits, 0.5):.1f}",
                    )
                )
        finally:
            nats.stop()
    return lines
