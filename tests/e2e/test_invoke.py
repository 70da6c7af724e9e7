"""Register a function and invoke it over HTTP, sync and async, as a user would."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import nats
import orjson
import pytest

from eventbus.subjects import CONTROL_METRICS
from runtimes.tally import CompletionTally
from runtimes.types import ActivationRecord, ActivationStatus
from tests.e2e.functions import HELLO, NOOP
from tests.support import Platform, wait_activation, wait_for


def deploy(client: httpx.Client, name: str, code: str, **spec: Any) -> dict[str, Any]:
    r = client.put(f"/v1/functions/{name}", json={"handler": "main", "code": code, **spec})
    assert r.status_code in (200, 201), r.text
    return r.json()  # type: ignore[no-any-return]


def test_function_crud(client: httpx.Client) -> None:
    created = deploy(client, "crud", NOOP)
    assert created["version"] == 1
    updated = deploy(client, "crud", NOOP, timeout_s=5)
    assert updated["version"] == 2 and updated["timeout_s"] == 5
    assert client.get("/v1/functions/crud").json()["version"] == 2
    assert "crud" in [f["name"] for f in client.get("/v1/functions").json()]
    again = client.post("/v1/functions", json={"name": "crud", "handler": "main", "code": NOOP})
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert client.delete("/v1/functions/crud").status_code == 204
    assert client.get("/v1/functions/crud").status_code == 404


def test_sync_invoke_returns_result_and_records_activation(client: httpx.Client) -> None:
    deploy(client, "hello", HELLO)
    r = client.post("/v1/functions/hello/invoke", json={"name": "Ada", "times": 2})
    assert r.status_code == 200, r.text
    assert r.json() == {"greeting": "Hello Ada! Hello Ada!", "version": 1}
    activation_id = r.headers["x-activation-id"]
    record = client.get(f"/v1/activations/{activation_id}").json()
    assert record["status"] == "success"
    assert record["function"] == "hello" and record["version"] == 1
    assert record["duration_ms"] >= 0 and record["wait_ms"] is not None
    logs = client.get(f"/v1/activations/{activation_id}/logs").json()["logs"]
    assert any("stdout: hello called for Ada" in line for line in logs)
    assert any(activation_id in line for line in logs)
    result = client.get(f"/v1/activations/{activation_id}/result").json()
    assert result["success"] is True and result["result"]["greeting"].startswith("Hello Ada")
    listed = client.get("/v1/activations", params={"function": "hello"}).json()
    assert activation_id in [a["id"] for a in listed]
    # a path that only ends like an invoke (a newline after it) invokes nothing
    for odd in ("/v1/functions/hello/invoke%0A", "/v1/functions/hello%00/invoke"):
        answer = client.post(odd, json={"name": "x"})
        assert answer.status_code == 404, odd
        assert answer.headers["content-type"] == "application/problem+json"


def test_first_invocation_is_a_cold_start_with_init_time(client: httpx.Client) -> None:
    deploy(client, "coldstart", NOOP)
    r = client.post("/v1/functions/coldstart/invoke", json={"x": 1})
    assert r.status_code == 200, r.text
    first = client.get(f"/v1/activations/{r.headers['x-activation-id']}").json()
    assert first["cold_start"] is True and first["init_ms"] > 0
    r = client.post("/v1/functions/coldstart/invoke", json={"x": 2})
    second = client.get(f"/v1/activations/{r.headers['x-activation-id']}").json()
    assert second["cold_start"] is False and second["init_ms"] is None


def test_async_invoke_with_query_and_prefer_header(client: httpx.Client) -> None:
    deploy(client, "hello", HELLO)
    r = client.post("/v1/functions/hello/invoke?async=true", json={"name": "Grace"})
    assert r.status_code == 202
    assert r.headers["location"] == f"/v1/activations/{r.json()['activation_id']}"
    record = wait_activation(client, r.json()["activation_id"])
    assert record["status"] == "success" and record["mode"] == "async"
    assert record["result"]["greeting"] == "Hello Grace!"
    r = client.post(
        "/v1/functions/hello/invoke", json={"name": "Linus"}, headers={"Prefer": "respond-async"}
    )
    assert r.status_code == 202
    assert (
        wait_activation(client, r.json()["activation_id"])["result"]["greeting"] == "Hello Linus!"
    )


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    got: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            got.append(orjson.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/done", got
    server.shutdown()
    server.server_close()


def test_async_callback_receives_the_record(
    client: httpx.Client, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    url, got = receiver
    deploy(client, "hello", HELLO)
    r = client.post("/v1/functions/hello/invoke", params={"callback": url}, json={"name": "Cb"})
    assert r.status_code == 202
    wait_for(lambda: got)
    assert got[0]["id"] == r.json()["activation_id"]
    assert got[0]["status"] == "success" and got[0]["result"]["greeting"] == "Hello Cb!"


def metric(text: str, sample: str, **labels: str) -> float:
    """The sum of ``sample``'s values whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if name == sample and all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_finished_activations_are_counted_once_in_the_metrics(
    client: httpx.Client, platform: Platform
) -> None:
    """Workers count what they finish and send the counts (`runtimes.tally`): every call is
    counted once, with its run time, whatever path it took. A function of its own: another
    test's calls of the same function may be counted up to a second later."""
    deploy(client, "metered", HELLO)
    ids = []
    for i in range(3):
        assert (
            client.post("/v1/functions/metered/invoke", json={"name": f"M{i}"}).status_code == 200
        )
    for _ in range(2):
        r = client.post(
            "/v1/functions/metered/invoke", params={"async": "true"}, json={"name": "A"}
        )
        ids.append(r.json()["activation_id"])
    for activation_id in ids:
        wait_activation(client, activation_id)

    def counted() -> str | None:
        text = client.get("/metrics").text
        now = metric(text, "deepfaas_invocations_total", function="metered", status="success")
        return text if now >= 5 else None

    text = wait_for(counted)
    assert metric(text, "deepfaas_invocations_total", function="metered", status="success") == 5
    # and no process counts them again with its next tally (one a second)
    until = time.monotonic() + 1.5
    while time.monotonic() < until:
        later = client.get("/metrics").text
        assert (
            metric(later, "deepfaas_invocations_total", function="metered", status="success") == 5
        )
        time.sleep(0.1)
    assert metric(text, "deepfaas_activation_duration_seconds_count", function="metered") == 5
    inf = metric(text, "deepfaas_activation_duration_seconds_bucket", function="metered", le="+Inf")
    assert inf == 5
    assert 'deepfaas_queue_waiting{function="metered"}' in text
    # anonymous: the same figures summed, and no function's name
    anonymous = httpx.get(f"{platform.url}/metrics").text
    assert 'function="' not in anonymous
    assert metric(anonymous, "deepfaas_invocations_total", status="success") >= 5


def test_the_metrics_add_up_tallies_from_any_process_and_drop_malformed_ones(
    client: httpx.Client, platform: Platform
) -> None:
    """A tally as another process sends it (a worker elsewhere, the controller) on
    ``control.metrics`` is added to what the gateway shows; bytes that are no tally change
    nothing (published here with the server's admin user)."""
    tally = CompletionTally()
    tally.add(
        ActivationRecord(
            id="a1",
            start=datetime.now(UTC),
            function="elsewhere",
            version=1,
            mode="async",
            status=ActivationStatus.TIMEOUT,
            duration_ms=2.0,
            wait_ms=None,
            init_ms=300.0,
            cold_start=True,
        )
    )

    async def send(*bodies: bytes) -> None:
        nc = await nats.connect(platform.nats.admin_url)
        try:
            for body in bodies:
                await nc.publish(CONTROL_METRICS, body)
            await nc.flush()
        finally:
            await nc.close()

    asyncio.run(send(b"not a tally", b'{"functions": {"elsewhere": {"cold_starts": -1}}}'))
    asyncio.run(send(*tally.take()))

    def shown() -> str | None:
        text = client.get("/metrics").text
        return text if "elsewhere" in text else None

    text = wait_for(shown, timeout=10)
    assert metric(text, "deepfaas_invocations_total", function="elsewhere") == 1
    assert metric(text, "deepfaas_invocations_total", function="elsewhere", status="timeout") == 1
    assert metric(text, "deepfaas_cold_starts_total", function="elsewhere") == 1
    bucket = "deepfaas_activation_duration_seconds_bucket"
    assert metric(text, bucket, function="elsewhere", le="0.001") == 0
    assert metric(text, bucket, function="elsewhere", le="0.0025") == 1
    assert metric(text, bucket, function="elsewhere", le="+Inf") == 1
    assert metric(text, "deepfaas_activation_duration_seconds_sum", function="elsewhere") == 0.002
    assert metric(text, "deepfaas_cold_start_init_seconds_count", function="elsewhere") == 1
    assert metric(text, "deepfaas_activation_wait_seconds_count", function="elsewhere") == 0


def test_health_readiness_and_openapi(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ok" and ready["nats"] is True
    spec = client.get("/openapi.json").json()
    assert "/v1/functions/{name}/invoke" in spec["paths"]
    assert client.get("/docs").status_code == 200


def test_the_platform_functions_keep_their_code(client: httpx.Client, platform: Platform) -> None:
    """`deploy`, `rank`, `inference` and `retrain` of `default` run `/v1/deployments`, `/v2` and
    the catalog: even the default key cannot put other code under their names (a fuzzer did,
    and `/v1/deployments` answered 502 after), nor delete them; their settings may change."""
    ow = "/api/v1/namespaces/_/actions"
    attempts = [
        client.put("/v1/functions/deploy", json={"handler": "main", "code": NOOP}),
        client.put("/v1/functions/rank", json={"handler": "os:system"}),
        client.put(
            "/v1/functions/retrain",
            json={"handler": "runtimes.worker.script:run", "script": "echo hi"},
        ),
        client.post("/v1/functions", json={"name": "inference", "handler": "main", "code": NOOP}),
    ]
    for r in attempts:
        assert r.status_code == 409, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert "the platform's own" in r.json()["detail"]
    r = client.put(f"{ow}/deploy?overwrite=true", json={"exec": {"kind": "python:3", "code": NOOP}})
    assert r.status_code == 409 and "the platform's own" in r.json()["error"], r.text
    assert client.get("/v1/functions/deploy").status_code == 404  # nothing was written
    settings = {"handler": "functions.inference.handler:handle", "min_scale": 0, "concurrency": 4}
    r = client.put("/v1/functions/inference", json=settings)
    assert r.status_code in (200, 201), r.text
    r = client.delete("/v1/functions/inference")
    assert r.status_code == 409 and "cannot be deleted" in r.json()["detail"], r.text
    assert client.get("/v1/functions/inference").json()["concurrency"] == 4
    # another namespace's own `deploy` is just a name
    made = client.post("/v1/auth/keys", json={"namespace": "own-deploy", "description": "test"})
    assert made.status_code == 201, made.text
    with platform.client(auth=made.json()["key"]) as theirs:
        r = theirs.put("/v1/functions/deploy", json={"handler": "main", "code": NOOP})
        assert r.status_code == 201, r.text
        assert theirs.delete("/v1/functions/deploy").status_code == 204
