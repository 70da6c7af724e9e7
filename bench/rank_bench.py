"""Benchmark of the `rank` function: time `rank()` on generated sites (fixed seed)."""

from __future__ import annotations

import random
import statistics
import sys
import time
from typing import Any

from functions.rank.handler import rank
from functions.rank.models import RankInput

GPU_MODELS = ("a100", "h100", "l40s", "t4", "v100")
REGIONS = ("eu-south", "eu-west", "eu-central", "us-east", "asia-east")


def make_input(n_sites: int, seed: int = 42) -> RankInput:
    """A validated rank input: `n_sites` sites of every kind, most with live figures."""
    rnd = random.Random(seed)
    sites: list[dict[str, Any]] = []
    for i in range(n_sites):
        kind = ("local", "kubernetes", "openwhisk")[i % 3]
        models = rnd.sample(GPU_MODELS, rnd.randint(0, 3))
        gpus = [
            {"model": m, "vendor": "nvidia", "count": rnd.choice([2, 4, 8, 16]),
             "cost_per_hour": round(rnd.uniform(0.2, 4.0), 2)}
            for m in models
        ]  # fmt: skip
        site = {
            "name": f"site-{i:05d}",
            "kind": kind,
            "endpoint": None if kind == "local" else f"https://site-{i}.example.org",
            "credentials": None if kind == "local" else {"env": f"SITE_{i}_TOKEN"},
            "region": rnd.choice(REGIONS),
            "datacentre": f"dc-{rnd.randint(0, 49)}",
            "capacity": {"cpus": rnd.choice([8, 32, 128, 512]),
                         "memory_mb": rnd.choice([16384, 65536, 262144]), "gpus": gpus},
            "cost_per_hour": round(rnd.uniform(0.0, 3.0), 2),
            "sla": {"availability": rnd.choice([0.95, 0.99, 0.995, 0.999, 0.9999])},
            "labels": {"tier": rnd.choice(["prod", "dev"])},
        }  # fmt: skip
        figures = None
        if i % 10:
            figures = {
                "free_gpus": {m: rnd.randint(0, 16) for m in models},
                "free_cpus": rnd.uniform(0, 128), "free_memory_mb": rnd.randint(0, 262144),
                "queue_wait_ms": rnd.uniform(0, 5000), "recent_failures": rnd.randint(0, 5),
                "utilisation": rnd.random(), "reachable": rnd.random() > 0.03,
            }  # fmt: skip
        sites.append({"site": site, "figures": figures})
    return RankInput.model_validate(
        {
            "requirements": {"cpu": 4, "memory_mb": 8192, "gpu": {"count": 1},
                             "regions": list(REGIONS[:4]), "max_cost_per_hour": 8.0},
            "preferences": {"preferred_regions": ["eu-south"]},
            "sites": sites,
        }
    )  # fmt: skip


def run(n_sites: int = 1000, repeats: int = 50) -> dict[str, float]:
    """Time `rank()` `repeats` times on `n_sites` generated sites; p50/p99/mean in ms."""
    started = time.perf_counter()
    inp = make_input(n_sites)
    validate_ms = 1e3 * (time.perf_counter() - started)
    rank(inp)  # warm-up
    times: list[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = rank(inp)
        times.append(1e3 * (time.perf_counter() - t0))
    times.sort()
    return {
        "n_sites": float(n_sites),
        "repeats": float(repeats),
        "p50_ms": statistics.median(times),
        "p99_ms": times[min(len(times) - 1, round(0.99 * (len(times) - 1)))],
        "mean_ms": statistics.fmean(times),
        "ranked": float(len(out.ranked)),
        "excluded": float(len(out.excluded)),
        "build_input_ms": validate_ms,
    }


def main(argv: list[str]) -> None:
    """Print the figures for `python -m bench.rank_bench [n_sites [repeats]]`."""
    n_sites = int(argv[0]) if argv else 1000
    repeats = int(argv[1]) if len(argv) > 1 else 50
    figures = run(n_sites, repeats)
    print(
        f"rank: {n_sites} sites, {repeats} runs: p50 {figures['p50_ms']:.2f} ms, "
        f"p99 {figures['p99_ms']:.2f} ms, mean {figures['mean_ms']:.2f} ms "
        f"({figures['ranked']:.0f} ranked, {figures['excluded']:.0f} excluded; "
        f"building the validated input took {figures['build_input_ms']:.1f} ms)"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
