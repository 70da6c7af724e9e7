"""A hostile tenant's function, run by the real platform in its bubblewrap sandbox.

Namespace `tenant-b` deploys one probe function and invokes it once per attack (sync, by a
storage trigger, and through the OpenWhisk API). Each attack is refused with a clear error
while the platform keeps serving: afterwards a `default` function still answers and no record
of `default` changed. Real nats-server (with credentials), real bubblewrap, real processes.
"""

from __future__ import annotations

import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import Platform, wait_activation, wait_for

PROBE = r"""
import os, socket, time

def _reachable(url):
    # nats-py retries a refused connection for ever, max_reconnect_attempts=0 or not
    host, port = url.split("//")[1].rsplit(":", 1)
    socket.create_connection((host, int(port)), timeout=2).close()

def _connect(url, **kw):
    import asyncio, nats
    _reachable(url)
    async def go():
        nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0,
                                allow_reconnect=False, **kw)
        kv = await nc.jetstream().key_value("auth_keys")
        keys = await kv.keys()
        await nc.close()
        return keys
    return asyncio.run(go())

def main(args, ctx):
    probe = args["probe"]
    if probe == "data_dir":
        found = {}
        for path in (args["data_dir"] + "/auth", args["data_dir"], *args.get("more", [])):
            try:
                found[path] = open(path).read() if path.endswith("auth") else os.listdir(path)
            except OSError as exc:
                found[path] = "refused: " + type(exc).__name__
        return found
    if probe == "code":
        seen = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    seen.append(open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace"))
                except OSError:
                    pass
        return {"processes": seen, "uid": os.getuid(), "root": sorted(os.listdir("/"))}
    if probe == "env":
        return {"env": dict(os.environ)}
    if probe in ("nats", "nats_guess"):
        kw = {"user": "admin", "password": "admin"} if probe == "nats_guess" else {}
        try:
            return {"keys": _connect(args["nats_url"], **kw)}
        except Exception as exc:
            return {"refused": f"{type(exc).__name__}: {exc}"}
    if probe == "publish":
        import asyncio, nats
        async def go():
            _reachable(args["nats_url"])
            nc = await nats.connect(args["nats_url"], connect_timeout=2, allow_reconnect=False,
                                    max_reconnect_attempts=0)
            await nc.publish("run." + args["victim"], b"{}")
            await nc.publish("events.io.deepfaas.storage.object.created", b"{}")
            await nc.flush()
        try:
            asyncio.run(go())
            return {"published": True}
        except Exception as exc:
            return {"refused": f"{type(exc).__name__}: {exc}"}
    if probe == "storage":
        import asyncio
        async def go():
            try:
                await ctx.storage.put(args["bucket"], "pwned.txt", b"pwned")
                return {"wrote": True}
            except Exception as exc:
                return {"refused": f"{type(exc).__name__}: {exc}"}
        return asyncio.run(go())
    if probe == "connect":
        out = {}
        for port in args["ports"]:
            for host in args.get("hosts", ["127.0.0.1"]):
                try:
                    socket.create_connection((host, port), timeout=2).close()
                    out[f"{host}:{port}"] = "connected"
                except OSError as exc:
                    out[f"{host}:{port}"] = "refused: " + type(exc).__name__
        return out
    if probe == "memory":
        block = bytearray(args["mb"] << 20)
        return {"allocated": len(block)}
    if probe == "fork":
        children = []
        while len(children) < 10_000:
            pid = os.fork()
            if pid == 0:
                time.sleep(30)
                os._exit(0)
            children.append(pid)
        return {"forked": len(children)}
    if probe == "print":
        print("x" * 100_000_000)
        for _ in range(200_000):
            print("y" * 500)
        return {"printed": True}
    return {"unknown": probe}
"""

VICTIM = "def main(args):\n    return {'ok': True, 'echo': args.get('x')}\n"


@pytest.fixture(scope="module")
def tenant(platform: Platform) -> Iterator[dict[str, Any]]:
    """A `tenant-b` key, its probe function, and `default`'s victim function and bucket."""
    with platform.client() as admin:
        assert admin.put(
            "/v1/functions/victim", json={"handler": "main", "code": VICTIM}
        ).is_success
        assert admin.post("/v1/functions/victim/invoke", json={"x": 1}).status_code == 200
        assert admin.put("/v1/buckets/victim-bucket").status_code in (200, 201)
        key = admin.post("/v1/auth/keys", json={"namespace": "tenant-b"}).json()["key"]
        before = admin.get("/v1/activations", params={"function": "victim"}).json()
    with platform.client(auth=key, timeout=60) as b:
        spec = {"handler": "main", "code": PROBE, "memory_mb": 256, "timeout_s": 30}
        assert b.put("/v1/functions/probe", json=spec).is_success
        spec_none = {**spec, "network": "none"}
        assert b.put("/v1/functions/probe-offline", json=spec_none).is_success
        yield {"key": key, "client": b, "victim_records": before}


def probe(tenant: dict[str, Any], name: str, fn: str = "probe", **args: Any) -> httpx.Response:
    return tenant["client"].post(f"/v1/functions/{fn}/invoke", json={"probe": name, **args})


def test_the_data_dir_and_the_auth_file_are_not_there(platform: Platform, tenant: dict) -> None:
    # ... nor the other runners' scratch dirs (each function's code and files), nor the repo.
    others = [tempfile.gettempdir() + "/deepfaas-sandbox", str(Path.cwd() / ".deepfaas")]
    r = probe(tenant, "data_dir", data_dir=str(platform.data_dir), more=others)
    assert r.status_code == 200, r.text
    assert all(str(v).startswith("refused") for v in r.json().values()), r.json()
    assert platform.auth.split(":")[1] not in r.text


def test_no_other_process_and_no_root(tenant: dict) -> None:
    r = probe(tenant, "code")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["uid"] != 0
    # Its own PID namespace: the runner (and bubblewrap's init), never a worker or the gateway.
    assert not any("gateway" in p or "nats-server" in p for p in body["processes"]), body


def test_nothing_of_the_platform_in_the_environment(platform: Platform, tenant: dict) -> None:
    env = probe(tenant, "env").json()["env"]
    assert not [k for k in env if k.startswith(("DEEPFAAS", "NATS"))], env
    assert platform.nats.url.split("//")[1] not in str(env)


@pytest.mark.parametrize("name", ["nats", "nats_guess"])
def test_the_bus_refuses_it(platform: Platform, tenant: dict, name: str) -> None:
    body = probe(tenant, name, nats_url=platform.nats.url).json()
    assert "refused" in body and "keys" not in body, body
    assert "uthorization" in body["refused"] or "onnect" in body["refused"], body


def test_it_cannot_publish_events_nor_invoke_over_the_bus(platform: Platform, tenant: dict) -> None:
    body = probe(tenant, "publish", nats_url=platform.nats.url, victim="victim").json()
    assert "refused" in body, body


def test_a_storage_event_posted_with_its_key_is_refused(tenant: dict) -> None:
    event = {
        "specversion": "1.0",
        "id": "forged-1",
        "source": "/forged",
        "type": "io.deepfaas.storage.object.created",
        "data": {"bucket": "victim-bucket", "key": "x"},
    }
    r = tenant["client"].post(
        "/v1/events", json=event, headers={"content-type": "application/cloudevents+json"}
    )
    assert r.status_code == 403, r.text


def test_ctx_storage_reaches_only_its_namespace(platform: Platform, tenant: dict) -> None:
    body = probe(tenant, "storage", bucket="victim-bucket").json()
    assert "refused" in body and "NoSuchBucket" in body["refused"], body
    with platform.client() as admin:
        assert admin.get("/v1/buckets/victim-bucket/objects/pwned.txt").status_code == 404
    # Its own bucket works through the same ctx.storage.
    assert tenant["client"].put("/v1/buckets/tenant-b-data").status_code in (200, 201)
    assert probe(tenant, "storage", bucket="tenant-b-data").json() == {"wrote": True}
    own = tenant["client"].get("/v1/buckets/tenant-b-data/objects/pwned.txt")
    assert own.status_code == 200 and own.content == b"pwned"


def test_network_none_reaches_nothing(platform: Platform, tenant: dict) -> None:
    gateway_port = int(platform.url.rsplit(":", 1)[1])
    nats_port = int(platform.nats.url.rsplit(":", 1)[1])
    ports = [gateway_port, nats_port]
    offline = probe(tenant, "connect", fn="probe-offline", ports=ports)
    assert offline.status_code == 200, offline.text
    assert all(v.startswith("refused") for v in offline.json().values()), offline.json()


def test_egress_does_not_reach_the_hosts_loopback(platform: Platform, tenant: dict) -> None:
    """The default (`egress`) has a network of its own: the platform's loopback ports (the
    gateway, nats-server) are not there, neither directly nor through slirp's gateway address
    (10.0.2.2, which would be the host's loopback); the test process reaches both."""
    gateway_port = int(platform.url.rsplit(":", 1)[1])
    nats_port = int(platform.nats.url.rsplit(":", 1)[1])
    for port in (gateway_port, nats_port):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # there, from here
    hosts = ["127.0.0.1", "10.0.2.2"]
    online = probe(tenant, "connect", ports=[gateway_port, nats_port], hosts=hosts)
    assert online.status_code == 200, online.text
    assert len(online.json()) == 4, online.json()
    assert all(v.startswith("refused") for v in online.json().values()), online.json()


def test_memory_past_the_limit_fails_that_activation(tenant: dict) -> None:
    r = probe(tenant, "memory", mb=1024)
    assert r.status_code == 502, r.text
    assert "memory limit 256 MiB exceeded" in r.text
    assert probe(tenant, "memory", mb=8).json() == {"allocated": 8 << 20}


def test_a_fork_bomb_hits_a_wall(tenant: dict) -> None:
    r = probe(tenant, "fork")
    assert r.status_code == 502, r.text
    assert "process limit" in r.text
    assert probe(tenant, "env").status_code == 200  # a fresh runner took over


def test_printing_100_mb_is_cut_short(platform: Platform, tenant: dict) -> None:
    r = tenant["client"].post(
        "/v1/functions/probe/invoke", params={"async": "true"}, json={"probe": "print"}
    )
    assert r.status_code == 202, r.text
    with platform.client(auth=tenant["key"]) as c:
        record = wait_activation(c, r.json()["activation_id"], timeout=60)
    assert record["status"] == "success", record
    assert "logs truncated" in record["logs"][-1]
    assert sum(len(line) for line in record["logs"]) < 300 * 1024


def test_a_trigger_started_run_is_sandboxed_too(platform: Platform, tenant: dict) -> None:
    b = tenant["client"]
    assert b.put("/v1/buckets/tenant-b-in").status_code in (200, 201)
    trigger = {
        "function": "probe",
        "bucket": "tenant-b-in",
        "params": {"probe": "data_dir", "data_dir": str(platform.data_dir)},
    }
    r = b.put("/v1/triggers/probe-on-upload", json=trigger)
    assert r.status_code == 201, r.text
    assert b.put("/v1/buckets/tenant-b-in/objects/a.txt", content=b"hi").status_code == 201

    def done() -> dict | None:
        rows = b.get("/v1/activations", params={"function": "probe"}).json()
        rows = rows.get("activations", rows) if isinstance(rows, dict) else rows
        for row in rows:
            if row.get("cause") and row.get("status") == "success":
                return row
        return None

    row = wait_for(done, timeout=30)
    record = b.get(f"/v1/activations/{row['id']}").json()
    assert all(str(v).startswith("refused") for v in record["result"].values()), record


def test_an_openwhisk_action_is_sandboxed_too(platform: Platform, tenant: dict) -> None:
    b = tenant["client"]
    action = {"exec": {"kind": "python:3", "code": PROBE}}
    assert b.put("/api/v1/namespaces/_/actions/ow-probe", json=action).status_code == 200
    r = b.post(
        "/api/v1/namespaces/_/actions/ow-probe?blocking=true&result=true",
        json={"probe": "env"},
    )
    assert r.status_code == 200, r.text
    assert not [k for k in r.json()["env"] if k.startswith("DEEPFAAS")], r.json()


def test_default_still_answers_and_its_records_are_untouched(
    platform: Platform, tenant: dict
) -> None:
    with platform.client() as admin:
        started = time.monotonic()
        r = admin.post("/v1/functions/victim/invoke", json={"x": 2})
        assert r.status_code == 200 and r.json() == {"ok": True, "echo": 2}
        assert time.monotonic() - started < 30
        before = tenant["victim_records"]
        rows = before.get("activations", before) if isinstance(before, dict) else before
        for row in rows:
            again = admin.get(f"/v1/activations/{row['id']}").json()
            assert again["status"] == row["status"] and again.get("end") == row.get("end")


BOOM = "def main(args):\n    raise ValueError('boom')\n"


def _dead_letter(client: httpx.Client, fn: str) -> dict[str, Any]:
    spec = {"handler": "main", "code": BOOM, "max_attempts": 1}
    assert client.put(f"/v1/functions/{fn}", json=spec).is_success
    accepted = client.post(f"/v1/functions/{fn}/invoke", params={"async": "true"}, json={})
    assert accepted.status_code == 202, accepted.text
    activation = accepted.json()["activation_id"]
    letters = wait_for(
        lambda: [
            d
            for d in client.get("/v1/dlq", params={"function": fn}).json()
            if d["activation_id"] == activation
        ],
        timeout=90,
    )
    letter: dict[str, Any] = letters[0]
    return letter


def test_each_namespace_sees_and_replays_only_its_own_dead_letters(
    platform: Platform, tenant: dict
) -> None:
    b: httpx.Client = tenant["client"]
    with platform.client(timeout=60) as admin:
        theirs = _dead_letter(admin, "victim-boom")
        mine = _dead_letter(b, "b-boom")
        assert mine["target"] == "tenant-b=b-boom"
        seen = {d["seq"] for d in b.get("/v1/dlq", params={"limit": 200}).json()}
        assert mine["seq"] in seen and theirs["seq"] not in seen
        assert not b.get("/v1/dlq", params={"function": "victim-boom"}).json()
        for odd in ("", "a=b", "x\u0000y", "é" * 300):  # names no letter has: none, no 500
            for caller in (admin, b):
                r = caller.get("/v1/dlq", params={"function": odd})
                assert r.status_code == 200 and r.json() == [], r.text
        seq = theirs["seq"]
        for refused in (
            b.get(f"/v1/dlq/{seq}"),
            b.post(f"/v1/dlq/{seq}/replay"),
            b.delete(f"/v1/dlq/{seq}"),
            b.post(f"/ui/x/dlq/{seq}/replay"),  # the console's replay button
        ):
            assert refused.status_code == 404, refused.text
        assert "victim-boom" not in b.get("/ui/x/dlq").text
        assert admin.get(f"/v1/dlq/{seq}").status_code == 200  # still there, unchanged
        everything = {d["seq"] for d in admin.get("/v1/dlq", params={"limit": 200}).json()}
        assert {seq, mine["seq"]} <= everything  # the operator sees every namespace's
        replayed = b.post(f"/v1/dlq/{mine['seq']}/replay")
        assert replayed.status_code == 202, replayed.text
        record = wait_activation(b, replayed.json()["activation_id"], timeout=90)
        assert record["function"] == "b-boom" and record["namespace"] == "tenant-b"
        assert b.get(f"/v1/dlq/{mine['seq']}").status_code == 404  # replayed letters go
