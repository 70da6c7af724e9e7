"""One namespace's workers cannot take the machine: past its budget its functions wait, then
fail with the reason, while another namespace's still run.

The platform runs with a namespace budget of 2 workers (`DEEPFAAS_NAMESPACE_MAX_WORKERS`) and
a short wait (`DEEPFAAS_GPU_WAIT_S`, which bounds every pending runtime's wait).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from eventbus.server import EmbeddedNats
from tests.e2e.functions import NOOP
from tests.support import Platform, start_platform, wait_activation, wait_for

WAIT_S = 2.0


@pytest.fixture(scope="module")
def platform(
    nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    started = start_platform(
        nats_server,
        Path(tmp_path_factory.mktemp("budget")),
        namespace_max_workers=2,
        gpu_wait_s=WAIT_S,
        prewarm=0,
    )
    yield started
    started.stop()


def runtime(client: httpx.Client, name: str) -> dict[str, object] | None:
    r = client.get(f"/v1/functions/{name}/runtime")
    return r.json() if r.status_code == 200 else None  # type: ignore[no-any-return]


def test_a_namespace_past_its_worker_budget_waits_then_fails_with_the_reason(
    platform: Platform,
) -> None:
    with platform.client() as client:
        spec = {"handler": "main", "code": NOOP}
        r = client.put("/v1/functions/keeper", json={**spec, "min_scale": 2, "max_scale": 2})
        assert r.status_code == 201, r.text
        wait_for(lambda: (runtime(client, "keeper") or {}).get("ready") == 2, timeout=60)
        assert client.put("/v1/functions/starved", json=spec).status_code == 201
        r = client.post("/v1/functions/starved/invoke", params={"async": "true"}, json={})
        assert r.status_code == 202
        record = wait_activation(client, r.json()["activation_id"], timeout=60)
        assert record["status"] == "error" and record["worker"] == "controller"
        assert "namespace 'default' runs 2 workers" in record["error"]
        state = runtime(client, "starved")
        assert state is not None and state["workers"] == 0
        assert "as many as one namespace may" in str(state["reason"])
        key = client.post("/v1/auth/keys", json={"namespace": "team-b"}).json()

    # another namespace has a budget of its own
    with platform.client(auth=key["key"]) as tenant:
        assert tenant.put("/v1/functions/own", json=spec).status_code == 201
        r = tenant.post("/v1/functions/own/invoke", json={"x": 1})
        assert r.status_code == 200, r.text
        assert r.json() == {"x": 1}
        # its own runtime it may read (why it waits, when it does); no other's, not the list
        own = tenant.get("/v1/functions/own/runtime").json()
        assert own["function"] == "own" and own["workers"] >= 1
        assert tenant.get("/v1/functions/starved/runtime").status_code == 404
        assert tenant.get("/v1/runtimes").status_code == 403

    # a new version of a function that fills the budget: no room to start beside the old
    # workers, so they go first (a rolling update would otherwise wait out its 120 s)
    with platform.client() as client:
        v2 = {"handler": "main", "code": "def main(params):\n    return {'v': 2}\n"}
        r = client.put("/v1/functions/keeper", json={**v2, "min_scale": 2, "max_scale": 2})
        assert r.status_code == 200, r.text

        def second_version() -> bool:
            r = client.post("/v1/functions/keeper/invoke", json={}, timeout=30)
            return r.status_code == 200 and r.json() == {"v": 2}

        wait_for(second_version, timeout=40)

    # the first namespace's budget frees up: its waiting function runs
    with platform.client() as client:
        assert client.delete("/v1/functions/keeper").status_code == 204
        r = client.post("/v1/functions/starved/invoke", json={"y": 2})
        assert r.status_code == 200, r.text
