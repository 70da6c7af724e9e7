"""Failures mid-flight: killed workers, a restarted nats-server, raising and slow handlers."""

from __future__ import annotations

import asyncio
import http.server
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson
from nats.js.api import ConsumerInfo

from eventbus.connection import Bus
from eventbus.invocations import enqueue, new_invocation
from eventbus.streams import consumer_name
from eventbus.types import INVOCATIONS_STREAM
from runtimes.activations import new_activation_id
from runtimes.invoker import SyncInvoker, SyncResult
from runtimes.specs import FunctionRegistry
from tests.e2e.functions import FAILING, HELLO, RECORDING, SLEEPY
from tests.e2e.test_cli_errors import cli
from tests.e2e.test_invoke import deploy
from tests.support import Platform, instances, wait_activation, wait_for


def ready_instances(client: httpx.Client, name: str, count: int = 1) -> list[dict[str, Any]]:
    def ready() -> list[dict[str, Any]] | None:
        items = instances(client, name)
        live = [i for i in items if i["ready"] and not i["stopping"]]
        return live if len(live) >= count else None

    result: list[dict[str, Any]] = wait_for(ready, timeout=30)
    return result


def test_killed_worker_is_redelivered_and_completes_once(
    client: httpx.Client, tmp_path: Path
) -> None:
    deploy(client, "recorder", RECORDING, min_scale=1, max_scale=1, concurrency=4)
    [worker] = ready_instances(client, "recorder")
    assert client.put("/v1/buckets/runs-kill").status_code in (200, 201)
    r = client.post(
        "/v1/functions/recorder/invoke?async=true", json={"s": 3, "bucket": "runs-kill", "tag": "a"}
    )
    activation_id = r.json()["activation_id"]
    wait_for(lambda: client.get(f"/v1/activations/{activation_id}").status_code == 200)
    assert client.get(f"/v1/activations/{activation_id}").json()["status"] == "running"
    os.kill(worker["pid"], signal.SIGKILL)
    record = wait_activation(client, activation_id, timeout=40)
    assert record["status"] == "success", record
    assert record["attempts"] == 2
    assert record["result"] == {"tag": "a", "pid_attempt": 2}
    assert recorded(client, "runs-kill") == ["a"]
    [replacement] = ready_instances(client, "recorder")
    assert replacement["pid"] != worker["pid"]


def test_raising_handler_retries_with_backoff_then_one_dead_letter(client: httpx.Client) -> None:
    deploy(client, "failing", FAILING, max_attempts=3)
    r = client.post("/v1/functions/failing/invoke?async=true", json={"why": "testing"})
    activation_id = r.json()["activation_id"]
    record = wait_activation(client, activation_id, timeout=30)
    assert record["status"] == "error" and record["attempts"] == 3
    assert record["error"] == "ValueError: boom: testing"
    assert (
        "Traceback" in record["error_detail"]
        and 'raise ValueError("boom: "' in record["error_detail"]
    )
    assert any("about to fail, attempt 3" in line for line in record["logs"])
    # backoff 0.2 s then 0.4 s between the three tries
    accepted = record["accepted"]
    took = _seconds(record["end"]) - _seconds(accepted)
    assert took >= 0.6
    letters = wait_for(lambda: client.get("/v1/dlq", params={"function": "failing"}).json())
    assert len(letters) == 1
    letter = letters[0]
    assert letter["activation_id"] == activation_id and letter["attempts"] == 3
    assert "ValueError: boom" in letter["traceback"]
    assert letter["event"]["subject"] == "failing"
    replayed = client.post(f"/v1/dlq/{letter['seq']}/replay")
    assert replayed.status_code == 202
    again = wait_activation(client, replayed.json()["activation_id"], timeout=30)
    assert again["status"] == "error" and again["attempts"] == 3
    letters = wait_for(
        lambda: [
            d
            for d in client.get("/v1/dlq", params={"function": "failing"}).json()
            if d["activation_id"] == again["id"]
        ]
    )
    assert len(client.get("/v1/dlq", params={"function": "failing"}).json()) == 1


def test_the_cli_reads_and_deletes_a_dead_letter(
    platform: Platform, client: httpx.Client, tmp_path: Path
) -> None:
    deploy(client, "failing-cli", FAILING, max_attempts=1)
    r = client.post("/v1/functions/failing-cli/invoke?async=true", json={"why": "cli"})
    activation_id = r.json()["activation_id"]
    [letter] = wait_for(lambda: client.get("/v1/dlq", params={"function": "failing-cli"}).json())
    got = cli("dlq", "get", str(letter["seq"]), "--url", platform.url, "--json",
              cwd=tmp_path, DEEPFAAS_AUTH=platform.auth)  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert orjson.loads(got.stdout)["activation_id"] == activation_id
    gone = cli("dlq", "delete", str(letter["seq"]), "--url", platform.url,
               cwd=tmp_path, DEEPFAAS_AUTH=platform.auth)  # fmt: skip
    assert gone.returncode == 0, gone.stderr
    assert client.get("/v1/dlq", params={"function": "failing-cli"}).json() == []
    again = cli("dlq", "get", str(letter["seq"]), "--url", platform.url,
                cwd=tmp_path, DEEPFAAS_AUTH=platform.auth)  # fmt: skip
    assert again.returncode != 0 and "Traceback" not in again.stderr


def test_sync_failure_answers_502_without_dead_letter(client: httpx.Client) -> None:
    deploy(client, "failsync", FAILING)
    r = client.post("/v1/functions/failsync/invoke", json={"why": "sync"})
    assert r.status_code == 502
    body = r.json()
    assert body["detail"] == "ValueError: boom: sync" and body["activation_id"]
    assert client.get("/v1/dlq", params={"function": "failsync"}).json() == []


def test_timeout_marks_the_activation_and_the_worker_keeps_serving(client: httpx.Client) -> None:
    deploy(client, "slowsync", SLEEPY, handler="blocking", timeout_s=1, concurrency=2, max_scale=1)
    r = client.post("/v1/functions/slowsync/invoke", json={"s": 4})
    assert r.status_code == 504, r.text
    record = client.get(f"/v1/activations/{r.headers['x-activation-id']}").json()
    assert record["status"] == "timeout" and "timeout of 1 s" in record["error"]
    fast = client.post("/v1/functions/slowsync/invoke", json={"s": 0})
    assert fast.status_code == 200 and fast.json() == {"slept": 0}
    deploy(client, "slowasync", SLEEPY, timeout_s=0.5)
    r = client.post("/v1/functions/slowasync/invoke?async=true", json={"s": 3})
    record = wait_activation(client, r.json()["activation_id"])
    assert record["status"] == "timeout" and record["attempts"] == 1


def test_restarted_nats_server_loses_no_accepted_invocation(
    client: httpx.Client, platform: Platform
) -> None:
    deploy(client, "sleeper", SLEEPY, min_scale=1, max_scale=2, concurrency=4)
    ready_instances(client, "sleeper")
    ids = [
        client.post("/v1/functions/sleeper/invoke?async=true", json={"s": 0.3}).json()[
            "activation_id"
        ]
        for _ in range(20)
    ]
    platform.nats.stop()
    time.sleep(1.0)
    platform.nats.start()
    for activation_id in ids:
        record = _wait_through_outage(client, activation_id)
        assert record["status"] == "success", record


def _wait_through_outage(client: httpx.Client, activation_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        try:
            r = client.get(f"/v1/activations/{activation_id}")
        except httpx.HTTPError:
            return None
        if r.status_code == 200 and r.json()["status"] not in ("running", "retrying"):
            return r.json()  # type: ignore[no-any-return]
        return None

    result: dict[str, Any] = wait_for(done, timeout=60, interval=0.2)
    return result


def bucket_keys(client: httpx.Client, bucket: str) -> list[str]:
    """Every key in ``bucket``, page after page."""
    keys: list[str] = []
    start: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if start:
            params["start_after"] = start
        page = client.get(f"/v1/buckets/{bucket}/objects", params=params).json()
        keys += [o["key"] for o in page["objects"]]
        if not page.get("is_truncated"):
            return keys
        start = page.get("next_marker") or keys[-1]


def recorded(client: httpx.Client, bucket: str) -> list[str]:
    """The tags of every run RECORDING made into ``bucket`` (one object per run), sorted."""
    return sorted(key.rsplit("/", 1)[0] for key in bucket_keys(client, bucket))


def _settled(platform: Platform, function: str) -> bool:
    """Every invocation queued for ``function`` has been taken and acknowledged."""

    async def consumer() -> ConsumerInfo:
        nc = await nats.connect(platform.nats.admin_url)
        try:
            return await nc.jetstream().consumer_info(INVOCATIONS_STREAM, consumer_name(function))
        finally:
            await nc.close()

    info = asyncio.run(consumer())
    return info.num_pending == 0 and info.num_ack_pending == 0


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_a_sync_call_past_its_wait_answers_202_and_still_completes_once(
    client: httpx.Client, platform: Platform, tmp_path: Path
) -> None:
    deploy(client, "slowrec", RECORDING, min_scale=1, max_scale=1, concurrency=2)
    ready_instances(client, "slowrec")
    assert client.put("/v1/buckets/runs-late").status_code in (200, 201)
    r = client.post(
        "/v1/functions/slowrec/invoke",
        params={"timeout": 0.5},
        json={"s": 2, "bucket": "runs-late", "tag": "late"},
    )
    assert r.status_code == 202, r.text
    activation_id = r.json()["activation_id"]
    assert r.headers["x-activation-id"] == activation_id
    record = wait_activation(client, activation_id, timeout=30)
    assert record["status"] == "success" and record["attempts"] == 1
    assert record["result"]["tag"] == "late"
    wait_for(lambda: _settled(platform, "slowrec"))  # the queued safety-net copy is handled
    assert recorded(client, "runs-late") == ["late"]


def test_a_sync_call_of_an_id_queued_already_is_answered_by_its_record(
    client: httpx.Client, platform: Platform
) -> None:
    """A sync call under a given id that another caller queued already (a sequence's component
    whose gateway died waiting on it, resumed by another gateway): whether it finds the run
    going (busy) or no worker yet, the call queues a copy, which JetStream drops as a duplicate
    of the first, so nothing ever answers its inbox. It is answered by the record when the run
    ends instead of waiting out its whole wait, and the function runs once."""
    deploy(client, "givenrec", RECORDING, min_scale=0, max_scale=1, concurrency=2)
    assert client.put("/v1/buckets/runs-given").status_code in (200, 201)
    body = orjson.dumps({"s": 1, "bucket": "runs-given", "tag": "given"})
    activation_id = new_activation_id()

    async def call() -> SyncResult:
        bus = await Bus.connect(platform.nats.admin_url, name="test-given-id")
        try:
            spec = await FunctionRegistry(bus).get("givenrec")
            earlier = new_invocation(
                bus,
                "givenrec",
                body,
                source="/tests",
                activation_id=activation_id,
                mode="sync",
                extra={"replyto": bus.nc.new_inbox()},  # its caller is gone
            )
            assert not (await enqueue(bus, earlier)).duplicate
            invoker = SyncInvoker(bus, source="/tests")
            return await invoker.invoke_sync(
                spec, body, content_type="application/json", wait=60, activation_id=activation_id
            )
        finally:
            await bus.close()

    outcome = asyncio.run(call())
    assert outcome.record is not None, "the call waited out its whole wait"
    assert outcome.record.status == "success" and outcome.record.attempts == 1
    assert outcome.record.id == activation_id
    assert recorded(client, "runs-given") == ["given"]


def test_a_callback_whose_worker_dies_mid_post_is_posted_again(client: httpx.Client) -> None:
    """The worker posts the record to the callback and is killed while the receiver holds
    the request: the invocation was not acked, so it comes back (after the 2 s ack wait), its
    next worker finds the activation done and posts the callback again. Before, the ack came
    first and the callback was lost with the worker."""
    deploy(client, "called", HELLO, min_scale=1, max_scale=1)
    [worker] = ready_instances(client, "called")
    first_in, release = threading.Event(), threading.Event()
    got: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = orjson.loads(self.rfile.read(int(self.headers["content-length"])))
            if not first_in.is_set():
                first_in.set()
                release.wait(30)  # held while its worker is killed
                return
            got.append(body)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/done"
        r = client.post("/v1/functions/called/invoke", params={"callback": url}, json={"name": "K"})
        assert r.status_code == 202, r.text
        assert first_in.wait(20), "the callback never came"
        os.kill(worker["pid"], signal.SIGKILL)
        wait_for(lambda: got, timeout=40)
        assert [g["id"] for g in got] == [r.json()["activation_id"]]
        assert got[0]["status"] == "success" and got[0]["result"]["greeting"] == "Hello K!"
    finally:
        release.set()
        server.shutdown()
        server.server_close()
