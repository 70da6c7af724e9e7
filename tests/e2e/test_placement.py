"""Placement across a hybrid cloud on the real platform: `deploy` ranks through `rank`, provisions.

Three sites: two `local` ones (`gpu-box` claims two A100s in its site entry, as this machine has
no GPU; `cpu-box` has none) and a `kubernetes` one on kmock (an in-memory Kubernetes API on
loopback, run in a thread), plus an `openwhisk` site whose credentials variable is unset.
Runtimes ask for `min_scale: 0`, so nothing needs to start for them to be ready. Events are
read back from the EVENTS stream with a real NATS connection.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kmock
import nats
import pytest

from eventbus.codec import from_nats
from eventbus.server import EmbeddedNats
from tests.support import Platform, start_platform, wait_activation, wait_for

TOKEN_ENV = "DEEPFAAS_TEST_K8S_TOKEN"
SITES = """
version: 1
sites:
  - name: gpu-box
    kind: local
    region: here
    datacentre: dc-gpu
    capacity: {{cpus: 8, memory_mb: 16384, gpus: [{{model: a100, vendor: nvidia, count: 2}}]}}
    sla: {{availability: 0.99}}
    labels: {{gpu: "yes"}}
  - name: cpu-box
    kind: local
    region: here
    datacentre: dc-cpu
    capacity: {{cpus: 4, memory_mb: 8192}}
    sla: {{availability: 0.95}}
    labels: {{gpu: "no"}}
  - name: k8s
    kind: kubernetes
    endpoint: {k8s}
    credentials: {{env: {token_env}}}
    region: there
    datacentre: dc-k8s
    capacity: {{cpus: 64, memory_mb: 262144, gpus: [{{model: t4, vendor: nvidia, count: 4}}]}}
    sla: {{availability: 0.995}}
    labels: {{namespace: ml}}
  - name: ow-nocreds
    kind: openwhisk
    endpoint: http://127.0.0.1:9
    credentials: {{env: DEEPFAAS_TEST_OW_AUTH_UNSET}}
    region: there
    datacentre: dc-ow
    capacity: {{cpus: 8, memory_mb: 8192}}
    sla: {{availability: 0.9}}
"""
CPU = {"function": "echo", "module": "functions.rank.handler:handle", "image": "x/echo:1"}


class KubeThread:
    """kmock's emulator served from its own event loop in a thread (the tests are sync)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stop = asyncio.Event()
        self.url = ""
        self.kube: kmock.KubernetesEmulator | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(),))

    async def _run(self) -> None:
        async with kmock.KubernetesEmulator() as kube, kmock.Server(kube, host="127.0.0.1"):
            self.kube, self.url = kube, str(kube.url).rstrip("/")
            self.ready.set()
            await self.stop.wait()

    def __enter__(self) -> KubeThread:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)
        self.loop.close()

    def fail_creates(self) -> None:
        """Answer every Deployment create with a 500 from now on."""
        error = kmock.KubernetesError(status=500, reason="InternalError", message="etcd is down")

        def inject() -> None:
            assert self.kube is not None
            self.kube["create apps/v1/deployments"] << error

        self.loop.call_soon_threadsafe(inject)


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeThread]:
    with KubeThread() as k:
        yield k


@pytest.fixture(scope="module")
def settings(kube: KubeThread, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("sites") / "sites.yaml"
    path.write_text(SITES.format(k8s=kube.url, token_env=TOKEN_ENV))
    return {"sites_file": str(path), "test_k8s_token": "t0ken", "builtins": "rank,deploy",
            "ready_timeout_s": 10}  # fmt: skip


@pytest.fixture(scope="module")
def platform(
    nats_server: EmbeddedNats, settings: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    started = start_platform(nats_server, Path(tmp_path_factory.mktemp("platform")), **settings)
    yield started
    started.stop()


def deploy(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/v1/deployments", json=body)
    assert r.status_code == 202, r.text
    assert r.json()["deployment"] == body.get("name", r.json()["deployment"])
    return wait_activation(client, r.json()["activation_id"], timeout=60)


def runtime_events(nats_url: str, deployment: str) -> list[tuple[str, dict[str, Any]]]:
    """(phase, data) of every `runtime.*` event about a deployment, in stream order."""

    async def read() -> list[tuple[str, dict[str, Any]]]:
        nc = await nats.connect(nats_url)
        found = []
        try:
            sub = await nc.jetstream().subscribe("events.runtime.>", ordered_consumer=True)
            while True:
                try:
                    msg = await sub.next_msg(timeout=1.0)
                except nats.errors.TimeoutError:
                    break
                event = from_nats(msg.headers, msg.data)
                if event.subject == deployment:
                    import orjson

                    found.append((event.type.rsplit(".", 1)[1], orjson.loads(event.data or b"{}")))
            await sub.unsubscribe()
        finally:
            await nc.close()
        return found

    return asyncio.run(read())


def test_a_gpu_request_lands_on_the_site_with_that_gpu(platform: Platform) -> None:
    with platform.client(timeout=90) as client:
        record = deploy(client, {"name": "gpu-job", "spec": {
            **CPU, "name": "gpu-job", "gpu": {"count": 1, "model": "a100"}}})  # fmt: skip
        assert record["status"] == "success", (record["error"], record.get("error_detail"))
        got = client.get("/v1/deployments/gpu-job").json()
    assert got["site"] == "gpu-box" and got["status"] == "ready"
    assert got["handle"]["kind"] == "local"
    phases = [p for p, _ in runtime_events(platform.nats.admin_url, "gpu-job")]
    assert phases == ["provisioning", "ready"]


def test_a_local_runtime_with_workers_is_ready_once_a_worker_announces(
    platform: Platform,
) -> None:
    spec = {"name": "rank-warm", "function": "rank", "module": "functions.rank.handler:handle",
            "min_scale": 1}  # fmt: skip
    with platform.client(timeout=90) as client:
        r = client.post(
            "/v1/deployments", json={"spec": spec, "constraints": {"sites": ["cpu-box"]}}
        )
        assert r.status_code == 202 and r.json()["deployment"] == "rank-warm", r.text
        record = wait_activation(client, r.json()["activation_id"], timeout=60)
        assert record["status"] == "success", (record["error"], record.get("error_detail"))
        got = client.get("/v1/deployments/rank-warm").json()
        assert got["site"] == "cpu-box" and got["status"] == "ready"
        r = client.delete("/v1/deployments/rank-warm", params={"wait": 30})
        assert r.status_code == 200 and r.json()["deployment"]["status"] == "released", r.text


def test_a_datacentre_constraint_is_honoured(platform: Platform) -> None:
    with platform.client(timeout=90) as client:
        record = deploy(client, {"name": "in-k8s", "spec": {**CPU, "name": "in-k8s"},
                                 "constraints": {"datacentres": ["dc-k8s"]}})  # fmt: skip
        assert record["status"] == "success", (record["error"], record.get("error_detail"))
        got = client.get("/v1/deployments/in-k8s").json()
    assert got["site"] == "k8s" and got["handle"]["ref"] == "Deployment/ml/in-k8s"


def test_a_failing_site_is_skipped_with_a_failed_event(
    platform: Platform, kube: KubeThread
) -> None:
    kube.fail_creates()
    prefs = {"weights": {"availability": 0, "cost": 0, "headroom": 0, "queue_wait": 0,
                         "failures": 0, "utilisation": 0, "locality": 1},
             "preferred_datacentres": ["dc-k8s"]}  # fmt: skip
    with platform.client(timeout=90) as client:
        record = deploy(client, {"name": "fallback", "spec": {**CPU, "name": "fallback"},
                                 "constraints": {"sites": ["k8s", "cpu-box"]},
                                 "preferences": prefs})  # fmt: skip
        assert record["status"] == "success", (record["error"], record.get("error_detail"))
        got = client.get("/v1/deployments/fallback").json()
    assert got["site"] == "cpu-box"
    assert [(a["site"], a["ok"]) for a in got["history"]] == [("k8s", False), ("cpu-box", True)]
    events = runtime_events(platform.nats.admin_url, "fallback")
    assert [(p, d["site"]) for p, d in events] == [
        ("provisioning", "k8s"), ("failed", "k8s"), ("provisioning", "cpu-box"),
        ("ready", "cpu-box"),
    ]  # fmt: skip
    assert "500" in events[1][1]["reason"] and "etcd is down" in events[1][1]["reason"]


def test_missing_credentials_fail_the_activation_with_the_reason(platform: Platform) -> None:
    with platform.client(timeout=90) as client:
        record = deploy(client, {"name": "no-creds", "spec": {**CPU, "name": "no-creds"},
                                 "constraints": {"sites": ["ow-nocreds"]}})  # fmt: skip
        got = client.get("/v1/deployments/no-creds").json()
    assert record["status"] == "error"
    assert "DEEPFAAS_TEST_OW_AUTH_UNSET is not set" in record["error"]
    assert got["status"] == "failed" and "ow-nocreds" in got["reason"]
    failed = [d for p, d in runtime_events(platform.nats.admin_url, "no-creds") if p == "failed"]
    assert failed and "is not set" in failed[0]["reason"] and failed[0]["code"] == "credentials"


def test_a_waiting_caller_gets_the_placements_failure_as_a_problem(platform: Platform) -> None:
    """Every site tried failed: 502 naming the deployment and why, not a bare function error."""
    body = {"name": "waited", "spec": {**CPU, "name": "waited"},
            "constraints": {"sites": ["ow-nocreds"]}}  # fmt: skip
    with platform.client(timeout=90) as client:
        r = client.post("/v1/deployments", params={"wait": 60}, json=body)
        assert r.status_code == 502, r.text
        problem = r.json()
        assert r.headers["content-type"].startswith("application/problem+json")
        assert problem["type"].endswith("/placement-failed")
        assert problem["title"] == "Placement failed"
        assert problem["detail"].startswith("deployment 'waited': no site could provision it")
        assert problem["deployment"] == "waited"
        assert problem["location"] == "/v1/deployments/waited"
        assert "DEEPFAAS_TEST_OW_AUTH_UNSET is not set" in problem["detail"]
        record = client.get(f"/v1/activations/{r.headers['x-activation-id']}").json()
        assert record["error_code"] == "placement_failed"
        assert client.get(problem["location"]).json()["status"] == "failed"
        r = client.delete(problem["location"], params={"wait": 30})  # not placed again later
        assert r.status_code == 200 and r.json()["deployment"]["status"] == "released", r.text


@pytest.mark.parametrize(
    ("constraints", "more", "words"),
    [({"sites": ["cpu-box", "atlantis"]}, {}, "sites that do not exist: atlantis"),
     ({"regions": ["mars"]}, {}, "region 'here' is not one of ['mars']"),
     ({"labels": {"gpu": "maybe"}}, {}, "needs label gpu=maybe"),
     ({"sites": ["cpu-box"]}, {"cpu": 64}, "needs 64 CPUs; 4 free of 4")],
)  # fmt: skip
def test_constraints_no_site_can_ever_meet_are_a_422(
    platform: Platform, constraints: dict[str, Any], more: dict[str, Any], words: str
) -> None:
    """Unknown sites, a region or label no site has, more CPUs than a site holds: the
    request's fault, nothing recorded; queued without `wait`, the activation is invalid at
    once (no retries)."""
    name = f"never-{len(words)}"
    body = {"name": name, "spec": {**CPU, "name": name, **more}, "constraints": constraints}
    with platform.client(timeout=90) as client:
        r = client.post("/v1/deployments", params={"wait": 60}, json=body)
        assert r.status_code == 422, r.text
        assert words in r.json()["detail"], r.text
        record = deploy(client, body)
        assert (record["status"], record["attempts"]) == ("invalid", 1), record
        assert words in record["error"] and record["error_code"] == "invalid"
        assert client.get(f"/v1/deployments/{name}").status_code == 404


def test_undeploy_emits_released(platform: Platform) -> None:
    with platform.client(timeout=90) as client:
        record = deploy(client, {"name": "short-lived", "spec": {**CPU, "name": "short-lived"},
                                 "constraints": {"sites": ["cpu-box"]}})  # fmt: skip
        assert record["status"] == "success", (record["error"], record.get("error_detail"))
        r = client.delete("/v1/deployments/short-lived")
        assert r.status_code == 202
        assert wait_activation(client, r.json()["activation_id"], 60)["status"] == "success"
        got = client.get("/v1/deployments/short-lived").json()
        assert client.delete("/v1/deployments/never-made").status_code == 404
    assert got["status"] == "released" and got["desired"] == "released"
    assert [p for p, _ in runtime_events(platform.nats.admin_url, "short-lived")][-1] == "released"


URL_IMPORT = """
tosca_definitions_version: tosca_simple_yaml_1_0
imports:
  - https://example.org/types.yaml
topology_template: {node_templates: {}}
"""
UNKNOWN_TYPE = """
tosca_definitions_version: tosca_simple_yaml_1_0
imports: [deepfaas_types.yaml]
topology_template:
  node_templates:
    thing: {type: acme.nodes.Mystery}
"""


@pytest.mark.parametrize(
    ("body", "words"),
    [({"template": URL_IMPORT}, "is a URL"),
     ({"template": UNKNOWN_TYPE}, "Mystery"),
     ({"template_path": "inference_gpu.yaml", "inputs": {"model_name": "m", "num_gpus": -1}},
      "num_gpus"),
     ({"spec": {**CPU, "name": "neg", "gpu": {"count": -1}}}, "greater than or equal to 0"),
     ({"template_path": "../../../etc/passwd"}, "not a file under"),
     ({"template_path": "a\u0000b.yaml"}, "not a file under"),
     ({"template_path": "x" * 5000}, "not a file under")],
)  # fmt: skip
def test_bad_input_is_a_422_problem(platform: Platform, body: dict[str, Any], words: str) -> None:
    with platform.client() as client:
        r = client.post("/v1/deployments", json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert words in r.text


def test_reconcile_after_restart_replaces_gone_runtimes_only(
    platform: Platform, settings: dict[str, Any]
) -> None:
    with platform.client() as client:
        before = {d["name"]: d for d in client.get("/v1/deployments").json()}
    platform.stop()  # the local runtimes lived in its controller: they are gone now
    gone = {"gpu-job", "fallback", "no-creds"}  # local ones, and the failed one
    again = start_platform(platform.nats, platform.data_dir, **settings)
    try:
        with again.client(timeout=90) as client:
            # the controller reconciles when it starts leading: wait until it has placed (or
            # tried to place) each of them again, one after another
            def reconciled() -> dict[str, Any] | None:
                now = {d["name"]: d for d in client.get("/v1/deployments").json()}
                settled = all(
                    now[n]["version"] > before[n]["version"] and now[n]["status"] != "provisioning"
                    for n in gone
                )  # fmt: skip
                return now if settled else None

            after = wait_for(reconciled, timeout=60)
            r = client.post("/v1/functions/deploy/invoke", json={"action": "reconcile"})
            assert r.status_code == 200, r.text
            again_replaced = {d["name"] for d in r.json()["deployments"]}
    finally:
        again.stop()
    replaced = {n for n, d in after.items() if d["version"] > before[n]["version"]}
    assert replaced == gone
    assert again_replaced == {"no-creds"}  # the rest are alive now; that one still fails
    assert after["gpu-job"]["status"] == "ready" and after["gpu-job"]["site"] == "gpu-box"
    assert after["gpu-job"]["version"] == before["gpu-job"]["version"] + 1
    assert after["in-k8s"]["version"] == before["in-k8s"]["version"]  # still there on k8s
    assert after["short-lived"]["status"] == "released"  # stays released
