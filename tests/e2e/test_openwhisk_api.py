"""The OpenWhisk-compatible API over the native objects: shapes, invokes, triggers, bad input."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from bench.harness import wait_for

NS = "/api/v1/namespaces/_"
HELLO = (
    "def main(args):\n"
    "    print('hello from', args.get('name'))\n"
    "    return {'greeting': 'Hello, ' + args.get('name', 'stranger') + '!'}\n"
)
FAIL = "def main(args):\n    raise ValueError('boom')\n"
SLOW = "import time\ndef main(args):\n    time.sleep(args.get('s', 3))\n    return {'slept': 1}\n"


def action(code: str, kind: str = "python:3", **extra: Any) -> dict[str, Any]:
    return {"exec": {"kind": kind, "code": code}, **extra}


def put_action(client: httpx.Client, name: str, code: str, **extra: Any) -> dict[str, Any]:
    r = client.put(f"{NS}/actions/{name}?overwrite=true", json=action(code, **extra))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def finished(client: httpx.Client, activation_id: str, timeout: float = 30) -> dict[str, Any]:
    def get() -> dict[str, Any] | None:
        r = client.get(f"{NS}/activations/{activation_id}")
        return r.json() if r.status_code == 200 else None

    found: dict[str, Any] = wait_for(get, timeout)
    return found


def test_action_crud_shows_through_both_apis(client: httpx.Client) -> None:
    params = [{"key": "name", "value": "P"}]
    r = client.put(f"{NS}/actions/ow-crud", json=action(HELLO, parameters=params))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["name"] == "ow-crud" and doc["namespace"] == "default"
    assert doc["version"] == "0.0.1" and doc["exec"]["kind"] == "python:3"
    assert doc["parameters"] == [{"key": "name", "value": "P"}]
    assert {"timeout", "memory"} <= set(doc["limits"])
    again = client.put(f"{NS}/actions/ow-crud", json=action(HELLO))
    assert again.status_code == 409, again.text
    updated = client.put(
        f"{NS}/actions/ow-crud?overwrite=true", json=action(HELLO, limits={"timeout": 5000})
    )
    assert updated.status_code == 200 and updated.json()["version"] == "0.0.2"
    assert updated.json()["limits"]["timeout"] == 5000
    native = client.get("/v1/functions/ow-crud").json()
    assert native["version"] == 2 and native["timeout_s"] == 5 and native["code"] == HELLO
    got = client.get(f"{NS}/actions/ow-crud").json()
    assert got["exec"]["code"] == HELLO
    listed = client.get(f"{NS}/actions").json()
    assert "ow-crud" in [a["name"] for a in listed]
    assert all("code" not in a["exec"] for a in listed)
    assert client.delete(f"{NS}/actions/ow-crud").status_code == 200
    assert client.get(f"{NS}/actions/ow-crud").status_code == 404
    assert client.get("/v1/functions/ow-crud").status_code == 404


def test_blocking_invoke_result_and_activation_shapes(client: httpx.Client) -> None:
    put_action(client, "ow-hello", HELLO, parameters=[{"key": "name", "value": "default"}])
    r = client.post(f"{NS}/actions/ow-hello?blocking=true&result=true", json={"name": "Ada"})
    assert r.status_code == 200, r.text
    assert r.json() == {"greeting": "Hello, Ada!"}
    activation_id = r.headers["x-openwhisk-activation-id"]
    merged = client.post(f"{NS}/actions/ow-hello?blocking=true&result=true", json={})
    assert merged.json() == {"greeting": "Hello, default!"}  # the action's parameter

    full = client.post(f"{NS}/actions/ow-hello?blocking=true", json={"name": "Bo"})
    assert full.status_code == 200
    record = full.json()
    for field in ("activationId", "namespace", "name", "start", "end", "duration", "logs"):
        assert field in record, field
    assert record["namespace"] == "default" and record["name"] == "ow-hello"
    assert record["end"] >= record["start"] > 1_600_000_000_000
    assert record["response"] == {
        "status": "success",
        "statusCode": 0,
        "success": True,
        "result": {"greeting": "Hello, Bo!"},
    }
    keys = {a["key"] for a in record["annotations"]}
    assert {"waitTime", "kind", "limits"} <= keys

    got = client.get(f"{NS}/activations/{activation_id}").json()
    assert got["activationId"] == activation_id
    logs = client.get(f"{NS}/activations/{activation_id}/logs").json()["logs"]
    assert any("hello from Ada" in line for line in logs)
    result = client.get(f"{NS}/activations/{activation_id}/result").json()
    assert result["success"] is True and result["result"] == {"greeting": "Hello, Ada!"}
    listed = client.get(f"{NS}/activations", params={"name": "ow-hello", "limit": 2}).json()
    assert len(listed) == 2 and all(a["name"] == "ow-hello" for a in listed)
    skipped = client.get(f"{NS}/activations", params={"name": "ow-hello", "skip": 1}).json()
    assert [a["activationId"] for a in skipped] == [
        a["activationId"]
        for a in client.get(f"{NS}/activations", params={"name": "ow-hello"}).json()[1:]
    ]
    future = int(time.time() * 1000) + 60_000
    assert client.get(f"{NS}/activations", params={"since": future}).json() == []
    assert client.get(f"{NS}/activations", params={"upto": 1}).json() == []
    assert client.get(f"{NS}/activations", params={"limit": 201}).status_code == 400


def test_non_blocking_invoke_answers_202_then_the_record(client: httpx.Client) -> None:
    put_action(client, "ow-async", HELLO)
    r = client.post(f"{NS}/actions/ow-async", json={"name": "Async"})
    assert r.status_code == 202, r.text
    activation_id = r.json()["activationId"]
    assert r.headers["x-openwhisk-activation-id"] == activation_id
    record = finished(client, activation_id)
    assert record["response"]["result"] == {"greeting": "Hello, Async!"}


def test_a_blocking_call_past_its_wait_answers_202(client: httpx.Client) -> None:
    put_action(client, "ow-slow", SLOW)
    r = client.post(f"{NS}/actions/ow-slow?blocking=true&timeout=300", json={"s": 2})
    assert r.status_code == 202, r.text
    record = finished(client, r.json()["activationId"])
    assert record["response"]["success"] is True


def test_an_action_error_answers_502_with_the_record(client: httpx.Client) -> None:
    put_action(client, "ow-fail", FAIL)
    r = client.post(f"{NS}/actions/ow-fail?blocking=true", json={})
    assert r.status_code == 502, r.text
    record = r.json()
    assert record["activationId"] == r.headers["x-openwhisk-activation-id"]
    assert record["response"]["success"] is False
    assert record["response"]["status"] == "application error"
    assert "boom" in record["response"]["result"]["error"]


def test_trigger_fire_with_and_without_an_active_rule(client: httpx.Client) -> None:
    put_action(client, "ow-target", HELLO)
    r = client.put(
        f"{NS}/triggers/ow-trig?overwrite=true",
        json={"parameters": [{"key": "name", "value": "Trigger"}]},
    )
    assert r.status_code == 200, r.text
    assert client.post(f"{NS}/triggers/ow-trig", json={}).status_code == 204  # no rule yet
    rule = client.put(
        f"{NS}/rules/ow-rule?overwrite=true", json={"trigger": "/_/ow-trig", "action": "ow-target"}
    )
    assert rule.status_code == 200, rule.text
    assert rule.json()["status"] == "active"
    assert rule.json()["trigger"]["name"] == "ow-trig"
    assert client.get("/v1/triggers/ow-rule").json()["function"] == "ow-target"  # native view
    time.sleep(0.5)  # the dispatcher learns of triggers through a KV watch
    fired = client.post(f"{NS}/triggers/ow-trig", json={"extra": 1})
    assert fired.status_code == 202, fired.text
    assert fired.json()["activationId"] == fired.headers["x-openwhisk-activation-id"]
    assert client.get(f"{NS}/activations/{fired.json()['activationId']}").status_code == 200

    def ran() -> list[dict[str, Any]]:
        found = client.get(f"{NS}/activations", params={"name": "ow-target"}).json()
        return [a for a in found if a["response"]["result"] == {"greeting": "Hello, Trigger!"}]

    assert wait_for(ran, 30)
    assert client.get(f"{NS}/triggers/ow-trig").json()["rules"]["default/ow-rule"]["status"] == (
        "active"
    )
    off = client.post(f"{NS}/rules/ow-rule", json={"status": "inactive"})
    assert off.status_code == 200 and off.json()["status"] == "inactive"
    assert client.post(f"{NS}/triggers/ow-trig", json={}).status_code == 204
    assert client.get(f"{NS}/rules").json()[0]["name"] == "ow-rule"
    assert client.delete(f"{NS}/rules/ow-rule").status_code == 200
    assert client.delete(f"{NS}/triggers/ow-trig").status_code == 200
    assert client.get(f"{NS}/triggers/ow-trig").status_code == 404


@pytest.mark.parametrize("name", ["Upper", "has.dot", "sp%20ace", "-dash", "a@b", "x" * 70])
def test_invalid_action_names_are_400(client: httpx.Client, name: str) -> None:
    r = client.put(f"{NS}/actions/{name}", json=action(HELLO))
    assert r.status_code == 400, r.text
    assert "name" in r.json()["detail"]


def test_an_unsupported_exec_kind_is_400_naming_the_supported_ones(client: httpx.Client) -> None:
    r = client.put(f"{NS}/actions/ow-node", json=action("function main(){}", kind="nodejs:20"))
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert "nodejs:20" in detail and "python:3" in detail and "python:default" in detail
    for kind in ("python:3", "python:3.11", "python:default"):
        ok = client.put(f"{NS}/actions/ow-kind?overwrite=true", json=action(HELLO, kind=kind))
        assert ok.status_code == 200 and ok.json()["exec"]["kind"] == kind


def test_other_bad_input(client: httpx.Client) -> None:
    assert client.get("/api/v1/namespaces/nosuchns/actions").status_code == 403
    no_code = client.put(f"{NS}/actions/ow-bad", json={"exec": {"kind": "python:3"}})
    assert no_code.status_code == 400
    syntax = client.put(f"{NS}/actions/ow-bad", json=action("def main(:\n"))
    assert syntax.status_code == 400 and "syntax" in syntax.json()["detail"]
    for timeout in (0, 10_000_000):
        r = client.put(f"{NS}/actions/ow-bad", json=action(HELLO, limits={"timeout": timeout}))
        assert r.status_code == 400 and "timeout" in r.json()["detail"], r.text
    put_action(client, "ow-args", HELLO)
    assert client.post(f"{NS}/actions/ow-args?blocking=true", content=b"[1]").status_code == 400
    assert client.post(f"{NS}/actions/ow-missing?blocking=true", json={}).status_code == 404
    rule = client.put(f"{NS}/rules/ow-r", json={"trigger": "nope", "action": "ow-args"})
    assert rule.status_code == 404
    assert client.post(f"{NS}/triggers/nope", json={}).status_code == 404
    assert client.get("/api/v1/namespaces").json() == ["default"]
    missing = client.get(f"{NS}/actions/ow-missing")
    assert missing.status_code == 404 and "ow-missing" in missing.json()["error"]
