"""A local deployment lives until it is deleted: not as long as the `deploy` worker that made it.

The platform releases idle workers after 1 s, so the `deploy` function's worker goes soon after
each call; the deployment's runtime (one worker of the function `kept`) must outlive it, and a
SIGKILL of a `deploy` worker, without being placed again. Its worker is found by the activation
records of sync calls to `kept`, which only the deployment's worker serves (the function's own
runtime has `min_scale: 0` and is never asked for a worker while the deployment answers).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventbus.server import EmbeddedNats
from tests.e2e.functions import NOOP
from tests.e2e.test_invoke import deploy
from tests.support import Platform, instances, start_platform, wait_for

SITES = """
version: 1
sites:
  - name: here
    kind: local
    region: r
    datacentre: d
    capacity: {cpus: 4, memory_mb: 8192}
    sla: {availability: 0.99}
"""


@pytest.fixture(scope="module")
def platform(
    nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    data_dir = Path(tmp_path_factory.mktemp("lifetime"))
    sites = data_dir / "sites.yaml"
    sites.write_text(SITES)
    started = start_platform(
        nats_server, data_dir, sites_file=str(sites), builtins="rank,deploy",
        idle_release_s=1, ready_timeout_s=60,
    )  # fmt: skip
    yield started
    started.stop()


def served_by(client: httpx.Client) -> int:
    """The pid of the worker that answered a sync call of `kept`."""
    r = client.post("/v1/functions/kept/invoke", json={"ping": 1})
    assert r.status_code == 200, r.text
    record = client.get(f"/v1/activations/{r.headers['x-activation-id']}").json()
    return int(record["worker"].rsplit("-", 1)[1])


def parent_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no PPid for {pid}")


def deploy_workers(client: httpx.Client) -> list[int]:
    return [i["pid"] for i in instances(client, "deploy")]


def a_deploy_worker(client: httpx.Client) -> list[int]:
    """The deploy function's workers, just after a call (so it has one unless idle again)."""
    call_deploy(client, {"action": "list"})
    return deploy_workers(client)


def call_deploy(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/v1/functions/deploy/invoke", json=body)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_a_local_deployment_outlives_the_deploy_workers_idle_release_and_death(
    platform: Platform,
) -> None:
    with platform.client(timeout=90) as client:
        deploy(client, "kept", NOOP, min_scale=0, max_scale=1)
        spec = {"name": "kept-dep", "function": "kept", "min_scale": 1, "max_scale": 1}
        r = client.post("/v1/deployments", params={"wait": 60}, json={"spec": spec})
        assert r.status_code == 200, r.text
        placed = r.json()["deployment"]
        assert placed["status"] == "ready" and placed["site"] == "here"
        worker = served_by(client)
        # the runtime belongs to the control plane, not to the worker that asked for it
        assert parent_of(worker) == platform.process.pid

        # idle release: the deploy function's workers go; the deployment stays
        wait_for(lambda: deploy_workers(client) == [], timeout=60)
        assert call_deploy(client, {"action": "reconcile"})["deployments"] == []
        assert served_by(client) == worker

        # a SIGKILLed deploy worker (one that is serving a call now) takes nothing with it
        pids = wait_for(lambda: a_deploy_worker(client), timeout=60)
        os.kill(pids[0], signal.SIGKILL)
        wait_for(lambda: pids[0] not in deploy_workers(client), timeout=60)
        got = call_deploy(client, {"action": "get", "name": "kept-dep"})["deployment"]
        assert got["status"] == "ready" and got["version"] == placed["version"]
        assert served_by(client) == worker
        assert call_deploy(client, {"action": "reconcile"})["deployments"] == []

        # deleted, it is gone: the next call is served by the function's own runtime
        r = client.delete("/v1/deployments/kept-dep", params={"wait": 60})
        assert r.status_code == 200 and r.json()["deployment"]["status"] == "released"
        wait_for(lambda: not Path(f"/proc/{worker}").exists(), timeout=60)
        assert served_by(client) != worker
