"""Events in and out over HTTP: POST /v1/events, /v1/subscriptions, webhook delivery, the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from cli.subscriptions import sub_app
from eventbus.types import new_id
from tests.eventbus.test_delivery import Receiver, serve_receiver
from tests.support import Platform, wait_for


def _problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["detail"]
    return body


def _binary(event_type: str, **extra: str) -> dict[str, str]:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": new_id(),
        "ce-source": "/e2e",
        "ce-type": event_type,
        "content-type": "application/json",
    }
    headers.update(extra)
    return headers


def _structured(event_type: str, **attrs: Any) -> bytes:
    doc = {"specversion": "1.0", "id": new_id(), "source": "/e2e", "type": event_type}
    doc.update(attrs)
    return orjson.dumps(doc)


STRUCTURED = {"content-type": "application/cloudevents+json"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serve_receiver() as running:
        yield running


def test_malformed_cloudevents_are_400_with_the_reason(client: httpx.Client) -> None:
    headers = _binary("com.example.e2e.bad")
    del headers["ce-id"]
    assert (
        "'id'" in _problem(client.post("/v1/events", content=b"{}", headers=headers), 400)["detail"]
    )
    r = client.post("/v1/events", content=b"{not json", headers=STRUCTURED)
    assert "not valid JSON" in _problem(r, 400)["detail"]
    r = client.post("/v1/events", content=_structured("x.y", specversion="0.3"), headers=STRUCTURED)
    assert "specversion" in _problem(r, 400)["detail"]
    r = client.post("/v1/events", content=_structured("x.y", time="yesterday"), headers=STRUCTURED)
    assert "RFC 3339" in _problem(r, 400)["detail"]
    r = client.post("/v1/events", content=b'{"a": 1}', headers={"content-type": "application/json"})
    assert "specversion" in _problem(r, 400)["detail"]


def test_platform_event_types_cannot_be_forged(client: httpx.Client) -> None:
    for event_type in (
        "io.deepfaas.activation.completed",
        "io.deepfaas.invocation.requested",
        "IO.DEEPFAAS.Activation.failed",
        "io.deepfaas.trigger.skipped",
        "activation.completed",
        # every type under the prefix is the platform's own (storage events: no forged uploads)
        "io.deepfaas.catalog.model.x",
        "io.deepfaas.storage.object.created",
    ):
        body = _problem(client.post("/v1/events", content=b"{}", headers=_binary(event_type)), 403)
        assert event_type in body["detail"]
    r = client.post("/v1/events", content=b"{}", headers=_binary("org.example.catalog.model.x"))
    assert r.status_code == 202, r.text
    assert r.json()["subject"] == "events.org.example.catalog.model.x"


def test_a_posted_event_is_published_once(client: httpx.Client) -> None:
    body = _structured("com.example.e2e.once", subject="a/b", data={"k": 1})
    first = client.post("/v1/events", content=body, headers=STRUCTURED)
    assert first.status_code == 202, first.text
    accepted = first.json()
    assert accepted["duplicate"] is False and accepted["subject"] == "events.com.example.e2e.once"
    again = client.post("/v1/events", content=body, headers=STRUCTURED).json()
    assert again["duplicate"] is True and again["id"] == accepted["id"]
    assert again["stream_seq"] == accepted["stream_seq"]


def test_invalid_filters_and_sinks_are_422(client: httpx.Client, receiver: Receiver) -> None:
    hook = receiver.url + "/x"
    body = _problem(
        client.post("/v1/subscriptions", json={"sink": hook, "filters": [{"exakt": {}}]}), 422
    )
    assert "filters[0].exakt" in body["detail"] and "unknown dialect" in body["detail"]
    bad_filter = {"sink": hook, "filters": [{"any": []}]}
    assert (
        "filters[0].any"
        in _problem(client.post("/v1/subscriptions", json=bad_filter), 422)["detail"]
    )
    for sink in ("ftp://x/y", "nats:events.loop", "not a url", "nats:a.>"):
        assert (
            "sink" in _problem(client.post("/v1/subscriptions", json={"sink": sink}), 422)["detail"]
        )
    _problem(client.put("/v1/subscriptions/bad.id", json={"sink": hook}), 422)
    assert client.get("/v1/subscriptions").status_code == 200


def test_subscription_crud(client: httpx.Client, receiver: Receiver) -> None:
    r = client.post("/v1/subscriptions", json={"sink": receiver.url + "/a", "types": ["t.a"]})
    assert r.status_code == 201, r.text
    created = r.json()
    sid = created["id"]
    assert r.headers["location"] == f"/v1/subscriptions/{sid}"
    assert created["protocol"] == "HTTP" and created["delivery"]["delivered"] == 0
    assert sid in [s["id"] for s in client.get("/v1/subscriptions").json()]
    assert client.get(f"/v1/subscriptions/{sid}").json()["types"] == ["t.a"]
    r = client.put(f"/v1/subscriptions/{sid}", json={"sink": "nats:team.a", "enabled": False})
    assert r.status_code == 200 and r.json()["protocol"] == "NATS"
    assert r.json()["created"] == created["created"]
    assert client.put("/v1/subscriptions/named-one", json={"sink": "nats:b"}).status_code == 201
    assert (
        client.post("/v1/subscriptions", json={"id": "named-one", "sink": "nats:b"}).status_code
        == 409
    )
    for key in (sid, "named-one"):
        assert client.delete(f"/v1/subscriptions/{key}").status_code == 204
        _problem(client.get(f"/v1/subscriptions/{key}"), 404)
    _problem(client.delete(f"/v1/subscriptions/{sid}"), 404)


def test_a_posted_event_reaches_a_webhook_subscription(
    client: httpx.Client, receiver: Receiver
) -> None:
    r = client.post(
        "/v1/subscriptions",
        json={
            "sink": receiver.url + "/hook",
            "types": ["com.example.e2e.hook"],
            "filters": [{"prefix": {"subject": "in/"}}],
        },
    )
    sid = r.json()["id"]
    headers = _binary("com.example.e2e.hook", **{"ce-subject": "out/1"})
    assert client.post("/v1/events", content=b"{}", headers=headers).status_code == 202
    headers = _binary("com.example.e2e.hook", **{"ce-subject": "in/1"})
    assert client.post("/v1/events", content=b'{"x": 1}', headers=headers).status_code == 202
    [got] = wait_for(lambda: receiver.at("/hook"))
    assert got.headers["ce-id"] == headers["ce-id"] and got.headers["ce-subject"] == "in/1"
    assert got.body == b'{"x": 1}'

    def delivered() -> dict[str, Any] | None:
        state: dict[str, Any] = client.get(f"/v1/subscriptions/{sid}").json()["delivery"]
        return state if state["delivered"] == 1 else None

    assert wait_for(delivered)["last_event_id"] == headers["ce-id"]
    assert len(receiver.at("/hook")) == 1
    client.delete(f"/v1/subscriptions/{sid}")


def test_a_failing_webhook_shows_in_its_state_and_the_dlq(
    client: httpx.Client, receiver: Receiver
) -> None:
    receiver.plans["/broken"] = [503]
    body = {"sink": receiver.url + "/broken", "types": ["com.example.e2e.broken"]}
    sid = client.post("/v1/subscriptions", json={**body, "config": {"max_tries": 2}}).json()["id"]
    headers = _binary("com.example.e2e.broken")
    assert client.post("/v1/events", content=b"{}", headers=headers).status_code == 202
    [letter] = wait_for(lambda: client.get("/v1/dlq", params={"function": sid}).json())
    assert letter["kind"] == "delivery" and letter["attempts"] == 2
    assert letter["event"]["id"] == headers["ce-id"] and "503" in letter["error"]
    state = wait_for(
        lambda: (
            (d := client.get(f"/v1/subscriptions/{sid}").json()["delivery"])["dead_lettered"] and d
        )
    )
    assert state["failed"] == 2 and state["delivered"] == 0 and "503" in state["last_error"]
    assert len(receiver.at("/broken")) == 2
    client.delete(f"/v1/subscriptions/{sid}")


def test_the_sub_cli(platform: Platform, receiver: Receiver) -> None:
    runner = CliRunner(env={"DEEPFAAS_AUTH": platform.auth})
    url = ["--url", platform.url]
    created = runner.invoke(
        sub_app,
        [
            "create",
            "--sink",
            receiver.url + "/cli",
            "--type",
            "com.example.e2e.cli",
            "--filter",
            '{"suffix": {"subject": ".png"}}',
            "--max-tries",
            "3",
            "-H",
            "X-Team=ml",
            "--json",
            *url,
        ],
    )
    assert created.exit_code == 0, created.output
    sid = orjson.loads(created.output)["id"]
    listed = runner.invoke(sub_app, ["list", "--json", *url])
    assert sid in [s["id"] for s in orjson.loads(listed.output)]
    got = orjson.loads(runner.invoke(sub_app, ["get", sid, "--json", *url]).output)
    assert got["filters"] == [{"suffix": {"subject": ".png"}}] and got["config"]["max_tries"] == 3
    assert got["protocolsettings"]["headers"] == {"X-Team": "ml"}
    bad = runner.invoke(sub_app, ["create", "--sink", "nats:x", "--filter", '{"nope": 1}', *url])
    assert bad.exit_code == 1 and "nope" in bad.output
    assert runner.invoke(sub_app, ["delete", sid, *url]).exit_code == 0
    assert runner.invoke(sub_app, ["get", sid, *url]).exit_code == 1
