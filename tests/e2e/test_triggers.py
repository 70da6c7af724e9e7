"""Triggers over HTTP, and an event on the bus running a function through one."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from eventbus.connection import Bus
from eventbus.publish import publish_event
from eventbus.triggers import activation_id_for
from eventbus.types import CloudEvent
from tests.e2e.test_invoke import deploy
from tests.support import Platform, wait_activation, wait_for

PREFIX = "io.deepfaas"
ECHO = """
def main(params):
    return {
        "width": params.get("width"),
        "key": params["object"]["key"],
        "event_id": params["event"]["id"],
    }
"""


def _problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    return body


def test_trigger_crud(client: httpx.Client) -> None:
    deploy(client, "thumbs", ECHO)
    body = {"name": "tcrud", "function": "thumbs", "bucket": "images", "key_suffix": ".jpg"}
    r = client.post("/v1/triggers", json=body)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/v1/triggers/tcrud"
    assert r.json()["version"] == 1 and r.json()["enabled"] is True
    assert _problem(client.post("/v1/triggers", json=body), 409)["status"] == 409
    r = client.put("/v1/triggers/tcrud", json={**r.json(), "params": {"width": 64}})
    assert r.status_code == 200 and r.json()["version"] == 2 and r.json()["params"] == {"width": 64}
    assert client.get("/v1/triggers/tcrud").json()["version"] == 2
    assert "tcrud" in [t["name"] for t in client.get("/v1/triggers").json()]
    assert client.get("/v1/triggers", params={"function": "nobody"}).json() == []
    assert client.post("/v1/triggers/tcrud/disable").json()["enabled"] is False
    assert client.post("/v1/triggers/tcrud/enable").json()["enabled"] is True
    assert client.delete("/v1/triggers/tcrud").status_code == 204
    _problem(client.get("/v1/triggers/tcrud"), 404)
    _problem(client.delete("/v1/triggers/tcrud"), 404)
    r = client.put("/v1/triggers/tnew", json={"function": "thumbs", "event_types": ["x.y"]})
    assert r.status_code == 201 and r.json()["name"] == "tnew"


def test_invalid_filter_is_422_naming_the_bad_part(client: httpx.Client) -> None:
    deploy(client, "thumbs", ECHO)
    bad = {"name": "tbad", "function": "thumbs", "filters": [{"all": [{"prefix": {"type": 3}}]}]}
    problem = _problem(client.post("/v1/triggers", json=bad), 422)
    assert problem["path"] == "filters[0].all[0].prefix.type"
    assert "filters[0].all[0].prefix.type" in problem["detail"]
    problem = _problem(
        client.post("/v1/triggers", json={**bad, "filters": [{"sql": "type = 'x'"}]}), 422
    )
    assert problem["path"] == "filters[0].sql"
    problem = _problem(
        client.post("/v1/triggers", json={"name": "tbad", "function": "thumbs"}), 422
    )
    assert "needs filters" in problem["detail"]
    problem = _problem(
        client.post("/v1/triggers", json={"name": "tbad", "function": "ghost", "bucket": "b1"}), 422
    )
    assert problem["field"] == "function" and "ghost" in problem["detail"]
    _problem(client.get("/v1/triggers/tbad"), 404)


async def _publish(url: str, event: CloudEvent) -> None:
    bus = await Bus.connect(url, name="e2e", prefix=PREFIX)
    try:
        await publish_event(bus, event)
    finally:
        await bus.close()


def test_an_event_on_the_bus_runs_the_function(client: httpx.Client, platform: Platform) -> None:
    deploy(client, "thumbs", ECHO)
    r = client.post(
        "/v1/triggers",
        json={
            "name": "on-upload",
            "function": "thumbs",
            "bucket": "uploads",
            "key_prefix": "in/",
            "params": {"width": 128},
            "output": {"bucket": "thumbnails", "key_template": "{stem}.json"},
        },
    )
    assert r.status_code == 201, r.text
    event = CloudEvent.create(
        type=f"{PREFIX}.storage.object.created",
        source="/storage/local/uploads",
        subject="in/cat.jpg",
        extensions={"bucket": "uploads"},
        data={"s3": {"bucket": {"name": "uploads"}, "object": {"key": "in%2Fcat.jpg", "size": 3}}},
    )
    asyncio.run(_publish(platform.nats.admin_url, event))
    record = wait_activation(client, activation_id_for(event.id, "on-upload"), timeout=30)
    assert record["status"] == "success", record
    assert record["cause"] == event.id and record["mode"] == "async"
    assert record["result"] == {"width": 128, "key": "in/cat.jpg", "event_id": event.id}


def test_a_disabled_trigger_match_is_counted_in_the_metrics(
    client: httpx.Client, platform: Platform
) -> None:
    deploy(client, "quiet", ECHO)
    r = client.post(
        "/v1/triggers",
        json={
            "name": "muted",
            "function": "quiet",
            "event_types": ["org.example.muted"],
            "filters": [{"exact": {"type": "org.example.muted"}}],
            "enabled": False,
        },
    )
    assert r.status_code == 201, r.text
    event = CloudEvent.create(type="org.example.muted", source="/t", data={})
    asyncio.run(_publish(platform.nats.admin_url, event))

    def counted() -> bool:
        text = client.get("/metrics").text
        return (
            'deepfaas_trigger_skipped_total{function="quiet",reason="disabled",trigger="muted"} 1.0'
            in text
        )

    wait_for(counted, timeout=15)
