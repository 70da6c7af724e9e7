"""The platform on a 3-node NATS cluster (every stream R3) beside one nats-server, same run.

Async: accepted invocations/s (each one stored on the INVOCATIONS stream, replicated to a
quorum on the cluster). Sync: the latency of one warm call at a time.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx

from bench.loadgen import LoadResult, http_load
from eventbus.server import EmbeddedNats, cluster_url, create_cluster
from tests.support import start_platform, wait_for

NOOP = "def main(params):\n    return params\n"


def _measure(label: str, servers: list[EmbeddedNats], data_dir: Path, seconds: float) -> list[str]:
    for server in servers:
        server.start(timeout=30)
    settings: dict[str, object] = {"nats_url": cluster_url(servers)}
    if len(servers) > 1:
        settings["nats_replicas"] = 3
    platform = start_platform(servers[0], data_dir, **settings)
    try:
        with platform.client() as client:
            spec = {"handler": "main", "code": NOOP, "min_scale": 2, "max_scale": 2}
            assert client.put("/v1/functions/noop", json={**spec, "concurrency": 64}).is_success
            wait_for(lambda: _ready(client), timeout=60)
        url = platform.auth_url
        path = "/v1/functions/noop/invoke"
        results: list[LoadResult] = [
            http_load(
                f"{label}: async invoke",
                url,
                f"{path}?async=true",
                b"{}",
                concurrency=16,
                seconds=seconds,
            ),
            http_load(f"{label}: sync invoke", url, path, b"{}", concurrency=1, seconds=seconds),
        ]
        return [r.row() for r in results]
    finally:
        platform.stop()
        for server in servers:
            server.stop()


def _ready(client: httpx.Client) -> bool:
    items = client.get("/v1/functions/noop/instances").json()
    return len([i for i in items if i["ready"]]) >= 2


def run(seconds: float) -> list[str]:
    """Async throughput and sync latency, one nats-server beside a 3-node cluster."""
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as tmp:
        root = Path(tmp)
        single = [EmbeddedNats(store_dir=root / "single" / "nats")]
        lines = _measure("1 nats-server", single, root / "single", seconds)
        three = create_cluster(root / "three" / "nats", 3)
        lines += _measure("3-node cluster, R3", three, root / "three", seconds)
    return lines


if __name__ == "__main__":
    for line in run(10.0):
        print(line)
