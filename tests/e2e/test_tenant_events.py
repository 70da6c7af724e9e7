"""Buckets, events, triggers and subscriptions belong to a namespace: a second namespace's key
against the same routes, on the platform as `deepfaas up` runs it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from cli.storage import storage_app
from eventbus.triggers import activation_id_for
from eventbus.types import new_id
from tests.e2e.test_invoke import deploy
from tests.eventbus.test_delivery import Receiver, serve_receiver
from tests.support import Platform, wait_activation, wait_for

TAG = uuid.uuid4().hex[:6]
DEFAULT_BUCKET = f"dflt-{TAG}"
ECHO = """
def main(params):
    return {"n": params.get("n"), "key": params.get("object", {}).get("key")}
"""


def _binary(event_type: str, data: Any = None, **extra: str) -> tuple[dict[str, str], bytes]:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": new_id(),
        "ce-source": "/e2e/tenants",
        "ce-type": event_type,
        "content-type": "application/json",
    }
    headers.update(extra)
    return headers, orjson.dumps(data if data is not None else {})


def _problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    return body


@pytest.fixture(scope="module")
def tenant_key(platform: Platform) -> str:
    """A key of namespace `tenant-b`; default has a bucket with an object."""
    with platform.client() as admin:
        assert admin.put(f"/v1/buckets/{DEFAULT_BUCKET}").status_code == 201
        put = admin.put(f"/v1/buckets/{DEFAULT_BUCKET}/objects/secret.txt", content=b"mine")
        assert put.status_code == 201, put.text
        key: str = admin.post("/v1/auth/keys", json={"namespace": "tenant-b"}).json()["key"]
        return key


@pytest.fixture
def tenant(platform: Platform, tenant_key: str) -> Iterator[httpx.Client]:
    with platform.client(auth=tenant_key) as client:
        yield client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serve_receiver() as running:
        yield running


def test_a_namespace_makes_and_uses_its_own_bucket(
    client: httpx.Client, tenant: httpx.Client
) -> None:
    bucket = f"tb-{TAG}"
    made = tenant.put(f"/v1/buckets/{bucket}")
    assert made.status_code == 201, made.text
    assert tenant.head(f"/v1/buckets/{bucket}").status_code == 200
    assert [b["name"] for b in tenant.get("/v1/buckets").json()] == [bucket]
    path = f"/v1/buckets/{bucket}/objects/in/x.txt"
    assert tenant.put(path, content=b"hello b").status_code == 201
    assert tenant.get(path).content == b"hello b"
    assert tenant.head(path).headers["content-length"] == "7"
    listing = tenant.get(f"/v1/buckets/{bucket}/objects", params={"delimiter": "/"}).json()
    assert listing["prefixes"] == ["in/"]
    # the other way round too: default neither sees nor reaches tenant-b's bucket
    names = [b["name"] for b in client.get("/v1/buckets").json()]
    assert DEFAULT_BUCKET in names and bucket not in names
    _problem(client.get(path), 404)
    _problem(client.put(f"/v1/buckets/{bucket}"), 409)
    assert tenant.delete(path).status_code == 204
    assert tenant.delete(f"/v1/buckets/{bucket}").status_code == 204
    assert tenant.get("/v1/buckets").json() == []
    # a deleted bucket's name is free again, for anyone
    assert client.put(f"/v1/buckets/{bucket}").status_code == 201
    assert client.delete(f"/v1/buckets/{bucket}").status_code == 204


def test_another_namespace_cannot_reach_default_buckets(
    client: httpx.Client, tenant: httpx.Client
) -> None:
    base = f"/v1/buckets/{DEFAULT_BUCKET}"
    obj = f"{base}/objects/secret.txt"
    for method, url, body in (
        ("HEAD", base, None),
        ("GET", f"{base}/objects", None),
        ("GET", obj, None),
        ("HEAD", obj, None),
        ("PUT", obj, b"overwritten"),
        ("PUT", f"{base}/objects/new.txt", b"planted"),
        ("DELETE", obj, None),
        ("DELETE", base, None),
    ):
        r = tenant.request(method, url, content=body)
        assert r.status_code == 404, (method, url, r.status_code, r.text)
        assert b"mine" not in r.content
    taken = _problem(tenant.put(base), 409)
    assert "taken" in taken["detail"]
    assert DEFAULT_BUCKET not in [b["name"] for b in tenant.get("/v1/buckets").json()]
    assert client.get(obj).content == b"mine"
    assert client.get(f"{base}/objects/new.txt").status_code == 404


def test_platform_storage_events_cannot_be_posted(tenant: httpx.Client) -> None:
    for event_type in (
        "io.deepfaas.storage.object.created",
        "io.deepfaas.storage.object.deleted",
        "io.deepfaas.catalog.model.published",
    ):
        headers, body = _binary(event_type, {"s3": {"bucket": {"name": DEFAULT_BUCKET}}})
        problem = _problem(tenant.post("/v1/events", content=body, headers=headers), 403)
        assert "event types under io.deepfaas. are the platform's own" in problem["detail"]


def armed(c: httpx.Client, trigger: str, event_type: str, **extra: str) -> None:
    """Post probe events until ``trigger`` (internal name) fires: the dispatcher learns of
    triggers through a KV watch, so wait for that fact rather than a fixed time."""

    def fired() -> bool:
        headers, body = _binary(event_type, {"n": 0}, **extra)
        assert c.post("/v1/events", content=body, headers=headers).status_code == 202
        try:
            wait_activation(c, activation_id_for(headers["ce-id"], trigger), timeout=5)
        except AssertionError:
            return False
        return True

    wait_for(fired, timeout=40)


def test_a_posted_event_fires_only_its_namespace_triggers(
    client: httpx.Client, tenant: httpx.Client
) -> None:
    event_type = f"com.example.tenants.{TAG}"
    for c, internal in ((client, "t-watch"), (tenant, "tenant-b=t-watch")):
        deploy(c, "t-echo", ECHO)
        r = c.put("/v1/triggers/t-watch", json={"function": "t-echo", "event_types": [event_type]})
        assert r.status_code == 201, r.text
        assert r.json()["filters"] == [] and r.json()["name"] == "t-watch"
        armed(c, internal, event_type)
    # tenant-b's event, even claiming to be default's, is tenant-b's
    headers, body = _binary(event_type, {"n": 2}, **{"ce-namespace": "default"})
    assert tenant.post("/v1/events", content=body, headers=headers).status_code == 202
    b_id = headers["ce-id"]
    mine = wait_activation(tenant, activation_id_for(b_id, "tenant-b=t-watch"), timeout=30)
    assert mine["status"] == "success", mine
    assert mine["result"]["n"] == 2 and mine["namespace"] == "tenant-b"
    # default's own event fires default's trigger only
    headers, body = _binary(event_type, {"n": 1})
    assert client.post("/v1/events", content=body, headers=headers).status_code == 202
    theirs = wait_activation(client, activation_id_for(headers["ce-id"], "t-watch"), timeout=30)
    assert theirs["status"] == "success" and theirs["result"]["n"] == 1
    # each event was dispatched once, for both namespaces' triggers at once: no other match
    assert client.get(f"/v1/activations/{activation_id_for(b_id, 't-watch')}").status_code == 404
    other = activation_id_for(headers["ce-id"], "tenant-b=t-watch")
    assert tenant.get(f"/v1/activations/{other}").status_code == 404


def test_uploads_fire_only_the_bucket_owner_triggers(
    client: httpx.Client, tenant: httpx.Client
) -> None:
    bucket, prefix = f"tb-up-{TAG}", f"up-{TAG}/"
    probe = f"com.example.probe.{TAG}"
    assert tenant.put(f"/v1/buckets/{bucket}").status_code == 201
    types = ["io.deepfaas.storage.object.created", probe]
    for c, internal in ((client, "t-up"), (tenant, "tenant-b=t-up")):
        deploy(c, "t-up", ECHO)
        trigger = {"function": "t-up", "key_prefix": prefix, "event_types": types}
        assert c.put("/v1/triggers/t-up", json=trigger).status_code == 201
        armed(c, internal, probe, **{"ce-subject": prefix + "probe"})

    def runs(c: httpx.Client) -> set[str]:
        found = c.get("/v1/activations", params={"function": "t-up", "limit": 200}).json()
        return {a["id"] for a in found}

    before_a, before_b = runs(client), runs(tenant)
    # tenant-b uploads into its bucket: only tenant-b's trigger fires
    key = prefix + "b.txt"
    assert tenant.put(f"/v1/buckets/{bucket}/objects/{key}", content=b"b").status_code == 201
    [b_run] = wait_for(lambda: runs(tenant) - before_b, timeout=30)
    assert wait_activation(tenant, b_run)["result"]["key"] == key
    # then default uploads into its own: the first new run of default's function is that one
    mine = prefix + "a.txt"
    put = client.put(f"/v1/buckets/{DEFAULT_BUCKET}/objects/{mine}", content=b"a")
    assert put.status_code == 201
    [a_run] = wait_for(lambda: runs(client) - before_a, timeout=30)
    assert wait_activation(client, a_run)["result"]["key"] == mine
    assert runs(tenant) - before_b == {b_run}


def test_a_subscription_gets_only_its_namespace_events(
    client: httpx.Client, tenant: httpx.Client, receiver: Receiver
) -> None:
    event_type = f"com.example.subs.{TAG}"
    for c, path in ((client, "/default"), (tenant, "/tenant")):
        r = c.post("/v1/subscriptions", json={"sink": receiver.url + path, "types": [event_type]})
        assert r.status_code == 201, r.text
    b_subs = tenant.get("/v1/subscriptions").json()
    assert [s["sink"] for s in b_subs] == [receiver.url + "/tenant"]
    sid = b_subs[0]["id"]
    assert "=" not in sid and tenant.get(f"/v1/subscriptions/{sid}").status_code == 200
    _problem(client.get(f"/v1/subscriptions/{sid}"), 404)
    # default's event claiming to be tenant-b's goes first: tenant-b's sink must not get it
    forged, body = _binary(event_type, {"who": "default"}, **{"ce-namespace": "tenant-b"})
    assert client.post("/v1/events", content=body, headers=forged).status_code == 202
    own, body = _binary(event_type, {"who": "tenant-b"})
    assert tenant.post("/v1/events", content=body, headers=own).status_code == 202
    [got] = wait_for(lambda: receiver.at("/tenant"), timeout=20)
    assert got.headers["ce-id"] == own["ce-id"] and got.headers["ce-namespace"] == "tenant-b"
    [other] = wait_for(lambda: receiver.at("/default"), timeout=20)
    assert other.headers["ce-id"] == forged["ce-id"] and other.headers["ce-namespace"] == "default"
    assert len(receiver.at("/tenant")) == 1
    assert tenant.delete(f"/v1/subscriptions/{sid}").status_code == 204
    # a NATS sink outside the namespace's own subjects could feed a bridge: refused
    bad = _problem(tenant.post("/v1/subscriptions", json={"sink": "nats:minio.events"}), 422)
    assert "ns.tenant-b." in bad["detail"]
    ok = tenant.post("/v1/subscriptions", json={"sink": "nats:ns.tenant-b.feed"})
    assert ok.status_code == 201, ok.text
    assert tenant.delete(f"/v1/subscriptions/{ok.json()['id']}").status_code == 204


def test_the_event_stream_shows_only_the_namespace_events(
    client: httpx.Client, tenant: httpx.Client
) -> None:
    event_type = f"com.example.stream.{TAG}"
    with tenant.stream("GET", "/v1/events/stream", params={"type": event_type}) as stream:
        lines = stream.iter_lines()
        assert next(lines) == ": subscribed"
        theirs, body = _binary(event_type)
        assert client.post("/v1/events", content=body, headers=theirs).status_code == 202
        own, body = _binary(event_type)
        assert tenant.post("/v1/events", content=body, headers=own).status_code == 202
        ids = []
        for line in lines:  # `id:` is the stream sequence; the event's id is in its data
            if line.startswith("data: "):
                ids.append(orjson.loads(line[6:])["id"])
                if ids[-1] == own["ce-id"]:
                    break
    assert ids == [own["ce-id"]]


def test_an_output_bucket_of_another_namespace_is_refused(
    client: httpx.Client, tenant: httpx.Client
) -> None:
    deploy(tenant, "t-out", ECHO)
    spec = {"function": "t-out", "event_types": ["com.example.out"]}
    r = tenant.put("/v1/triggers/t-out", json={**spec, "output": {"bucket": DEFAULT_BUCKET}})
    problem = _problem(r, 403)
    assert "another namespace" in problem["detail"]
    _problem(tenant.get("/v1/triggers/t-out"), 404)
    # a name nobody holds is claimed for the trigger's namespace, as its first output makes it
    fresh = f"tb-out-{TAG}"
    r = tenant.put("/v1/triggers/t-out", json={**spec, "output": {"bucket": fresh}})
    assert r.status_code == 201, r.text
    _problem(client.put(f"/v1/buckets/{fresh}"), 409)
    deploy(client, "t-out", ECHO)
    r = client.put("/v1/triggers/t-out", json={**spec, "output": {"bucket": fresh}})
    assert "another namespace" in _problem(r, 403)["detail"]
    assert tenant.put(f"/v1/buckets/{fresh}").status_code == 201


def test_an_openwhisk_fire_runs_the_rules_of_its_namespace(tenant: httpx.Client) -> None:
    ns = "/api/v1/namespaces/_"
    code = {"exec": {"kind": "python:3", "code": "def main(a):\n    return {'got': a.get('x')}\n"}}
    assert tenant.put(f"{ns}/actions/ow-b?overwrite=true", json=code).status_code == 200
    assert tenant.put(f"{ns}/triggers/ow-b-trig?overwrite=true", json={}).status_code == 200
    rule = {"trigger": "/_/ow-b-trig", "action": "ow-b"}
    assert tenant.put(f"{ns}/rules/ow-b-rule?overwrite=true", json=rule).status_code == 200

    def results() -> list[dict[str, Any]]:
        found = tenant.get(f"{ns}/activations", params={"name": "ow-b"}).json()
        return [a for a in found if a["response"]["result"] == {"got": 7}]

    def ran() -> bool:  # fire until the dispatcher knows the rule (it learns through a watch)
        fired = tenant.post(f"{ns}/triggers/ow-b-trig", json={"x": 7})
        assert fired.status_code == 202, fired.text
        try:
            wait_for(results, timeout=5)
        except AssertionError:
            return False
        return True

    # a fire carries the namespace of its trigger, so the tenant's own rule runs its action
    assert wait_for(ran, timeout=40)


def test_the_storage_cli_works_for_another_namespace(
    platform: Platform, tenant_key: str, tmp_path: Path
) -> None:
    runner = CliRunner(env={"DEEPFAAS_AUTH": tenant_key})
    url = ["--url", platform.url]
    bucket = f"tb-cli-{TAG}"
    made = runner.invoke(storage_app, ["bucket", "create", bucket, *url])
    assert made.exit_code == 0, made.output
    taken = runner.invoke(storage_app, ["bucket", "create", DEFAULT_BUCKET, *url])
    assert taken.exit_code == 1 and "taken" in taken.output
    (tmp_path / "f.txt").write_bytes(b"cli")
    up = runner.invoke(storage_app, ["upload", str(tmp_path / "f.txt"), f"{bucket}/d", *url])
    assert up.exit_code == 0, up.output
    listed = runner.invoke(storage_app, ["ls", f"{bucket}/d/", *url, "--json"])
    assert [o["key"] for o in orjson.loads(listed.stdout)["objects"]] == ["d/f.txt"]
    names = runner.invoke(storage_app, ["bucket", "list", *url, "--json"])
    assert bucket in [b["name"] for b in orjson.loads(names.stdout)]
    assert DEFAULT_BUCKET not in names.stdout
    foreign = runner.invoke(storage_app, ["ls", f"{DEFAULT_BUCKET}/", *url, "--json"])
    assert foreign.exit_code == 1 and "mine" not in foreign.output
