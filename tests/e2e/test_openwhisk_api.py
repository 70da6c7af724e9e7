"""The OpenWhisk-compatible API over the native objects: shapes, invokes, triggers, bad input."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import nats
import pytest

from eventbus.streams import SEQUENCES_KV
from runtimes.activations import new_activation_id
from tests.support import Platform, wait_for

NS = "/api/v1/namespaces/_"
HELLO = (
    "def main(args):\n"
    "    print('hello from', args.get('name'))\n"
    "    return {'greeting': 'Hello, ' + args.get('name', 'stranger') + '!'}\n"
)
ECHO = "def main(args):\n    return {'args': args}\n"
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
    echo_params = [{"key": "base", "value": 1}, {"key": "name", "value": "action default"}]
    put_action(client, "ow-echo", ECHO, parameters=echo_params)
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
    echo_rule = {"trigger": "ow-trig", "action": "/_/ow-echo"}
    assert client.put(f"{NS}/rules/ow-rule-echo", json=echo_rule).status_code == 200
    fired = client.post(f"{NS}/triggers/ow-trig", json={"extra": 1})
    assert fired.status_code == 202, fired.text
    fire_id = fired.json()["activationId"]
    assert fire_id == fired.headers["x-openwhisk-activation-id"]
    trigger_record = client.get(f"{NS}/activations/{fire_id}").json()
    # OpenWhisk's shape: the payload (over the trigger's parameters) as result, a line per rule
    assert trigger_record["response"]["result"] == {"name": "Trigger", "extra": 1}
    assert "cause" not in trigger_record
    lines = [json.loads(entry) for entry in trigger_record["logs"]]
    assert [(x["rule"], x["action"]) for x in lines] == [
        ("default/ow-rule", "default/ow-target"),
        ("default/ow-rule-echo", "default/ow-echo"),
    ]
    assert all(x["statusCode"] == 0 and x["success"] is True for x in lines)
    assert set(lines[0]) == {"statusCode", "success", "activationId", "rule", "action"}
    caused = finished(client, lines[0]["activationId"])
    assert caused["cause"] == fire_id  # the rule-caused activation names the fire
    assert caused["response"]["result"] == {"greeting": "Hello, Trigger!"}
    echoed = finished(client, lines[1]["activationId"])
    # the action's defaults under the payload, and no `event` parameter
    assert echoed["response"]["result"] == {"args": {"base": 1, "name": "Trigger", "extra": 1}}
    assert echoed["cause"] == fire_id

    assert client.get(f"{NS}/triggers/ow-trig").json()["rules"]["default/ow-rule"]["status"] == (
        "active"
    )
    assert client.delete(f"{NS}/rules/ow-rule-echo").status_code == 200
    off = client.post(f"{NS}/rules/ow-rule", json={"status": "inactive"})
    assert off.status_code == 200 and off.json()["status"] == "inactive"
    assert client.post(f"{NS}/triggers/ow-trig", json={}).status_code == 204
    assert "ow-rule" in [x["name"] for x in client.get(f"{NS}/rules").json()]
    assert client.delete(f"{NS}/rules/ow-rule").status_code == 200
    assert client.delete(f"{NS}/triggers/ow-trig").status_code == 200
    assert client.get(f"{NS}/triggers/ow-trig").status_code == 404


@pytest.mark.parametrize("name", ["Upper", "has.dot", "sp%20ace", "-dash", "a@b", "x" * 70])
def test_invalid_action_names_are_400(client: httpx.Client, name: str) -> None:
    r = client.put(f"{NS}/actions/{name}", json=action(HELLO))
    assert r.status_code == 400, r.text
    assert "name" in r.json()["error"]


def test_an_unsupported_exec_kind_is_400_naming_the_supported_ones(client: httpx.Client) -> None:
    r = client.put(f"{NS}/actions/ow-node", json=action("function main(){}", kind="nodejs:20"))
    assert r.status_code == 400
    detail = r.json()["error"]
    assert "nodejs:20" in detail and "python:3" in detail and "python:default" in detail
    for kind in ("python:3", "python:3.11", "python:default"):
        ok = client.put(f"{NS}/actions/ow-kind?overwrite=true", json=action(HELLO, kind=kind))
        assert ok.status_code == 200 and ok.json()["exec"]["kind"] == kind


def test_other_bad_input(client: httpx.Client) -> None:
    assert client.get("/api/v1/namespaces/nosuchns/actions").status_code == 403
    no_code = client.put(f"{NS}/actions/ow-bad", json={"exec": {"kind": "python:3"}})
    assert no_code.status_code == 400
    syntax = client.put(f"{NS}/actions/ow-bad", json=action("def main(:\n"))
    assert syntax.status_code == 400 and "syntax" in syntax.json()["error"]
    for timeout in (0, 10_000_000):
        r = client.put(f"{NS}/actions/ow-bad", json=action(HELLO, limits={"timeout": timeout}))
        assert r.status_code == 400 and "timeout" in r.json()["error"], r.text
    put_action(client, "ow-args", HELLO)
    assert client.post(f"{NS}/actions/ow-args?blocking=true", content=b"[1]").status_code == 400
    assert client.post(f"{NS}/actions/ow-missing?blocking=true", json={}).status_code == 404
    rule = client.put(f"{NS}/rules/ow-r", json={"trigger": "nope", "action": "ow-args"})
    assert rule.status_code == 404
    assert client.post(f"{NS}/triggers/nope", json={}).status_code == 404
    assert client.get("/api/v1/namespaces").json() == ["default"]
    missing = client.get(f"{NS}/actions/ow-missing")
    assert missing.status_code == 404 and "ow-missing" in missing.json()["error"]


INC = "def main(args):\n    return {'n': args.get('n', 0) + args.get('step', 1)}\n"
DOUBLE = "def main(args):\n    return {'n': args['n'] * 2}\n"


def test_errors_are_openwhisk_json_and_v1_keeps_problems(client: httpx.Client) -> None:
    missing = client.get(f"{NS}/actions/ow-nothing-here")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"
    body = missing.json()
    assert set(body) == {"error", "code"} and "ow-nothing-here" in body["error"]
    assert body["code"] == missing.headers["x-request-id"]
    put_action(client, "ow-err", HELLO)
    conflict = client.put(f"{NS}/actions/ow-err", json=action(HELLO))
    assert conflict.status_code == 409 and "exists" in conflict.json()["error"]
    bad_body = client.put(f"{NS}/rules/ow-r2", json={"trigger": 1})
    assert bad_body.status_code == 400 and bad_body.json()["error"]
    assert client.get("/api/v1/namespaces/other/actions").json()["error"]
    with httpx.Client(base_url=str(client.base_url), auth=("nobody", "wrong")) as stranger:
        refused = stranger.get(f"{NS}/actions")
        assert refused.status_code == 401 and refused.json()["error"]
    native = client.get("/v1/functions/ow-nothing-here")
    assert native.status_code == 404
    assert native.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "query",
    [
        {"since": "abc"},
        {"upto": "x"},
        {"limit": "abc"},
        {"limit": 201},
        {"skip": -1},
        {"since": -5},
        {"name": "Not/A/Valid/Name"},
    ],
)
def test_bad_activation_queries_are_400(client: httpx.Client, query: dict[str, Any]) -> None:
    r = client.get(f"{NS}/activations", params=query)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/json" and r.json()["error"]


def test_bad_list_queries_are_400(client: httpx.Client) -> None:
    for what in ("actions", "triggers", "rules", "packages"):
        for query in ({"limit": "many"}, {"skip": "-1"}, {"limit": 999}):
            r = client.get(f"{NS}/{what}", params=query)
            assert r.status_code == 400, (what, query, r.text)


def test_count_true_answers_the_number(client: httpx.Client) -> None:
    put_action(client, "ow-count", HELLO)
    assert client.post(f"{NS}/actions/ow-count?blocking=true", json={}).status_code == 200
    assert client.put(f"{NS}/triggers/ow-count-t?overwrite=true", json={}).status_code == 200
    assert client.put(f"{NS}/packages/ow-count-p?overwrite=true", json={}).status_code == 200
    for what in ("actions", "activations", "triggers", "rules", "packages"):
        listed = client.get(f"{NS}/{what}", params={"limit": 200}).json()
        counted = client.get(f"{NS}/{what}", params={"count": "true"})
        assert counted.status_code == 200, counted.text
        assert counted.json() == {what: len(listed)}, what
    assert client.get(f"{NS}/actions", params={"count": "true"}).json()["actions"] >= 1
    named = client.get(f"{NS}/activations", params={"count": "true", "name": "ow-count"})
    assert named.json() == {"activations": 1}


def test_packages_bindings_and_parameters(client: httpx.Client) -> None:
    pkg = {"parameters": [{"key": "a", "value": "pkg"}, {"key": "b", "value": "pkg"}]}
    made = client.put(f"{NS}/packages/ow-pkg?overwrite=true", json=pkg)
    assert made.status_code == 200, made.text
    assert made.json()["name"] == "ow-pkg" and made.json()["binding"] == {}
    again = client.put(f"{NS}/packages/ow-pkg", json=pkg)
    assert again.status_code == 409
    echo = action(ECHO, parameters=[{"key": "b", "value": "action"}])
    inside = client.put(f"{NS}/actions/ow-pkg/echo?overwrite=true", json=echo)
    assert inside.status_code == 200, inside.text
    assert inside.json()["namespace"] == "default/ow-pkg" and inside.json()["name"] == "echo"
    r = client.post(f"{NS}/actions/ow-pkg/echo?blocking=true&result=true", json={"c": "inv"})
    assert r.status_code == 200, r.text
    assert r.json() == {"args": {"a": "pkg", "b": "action", "c": "inv"}}  # package < action < call
    over = client.post(f"{NS}/actions/ow-pkg/echo?blocking=true&result=true", json={"b": "inv"})
    assert over.json() == {"args": {"a": "pkg", "b": "inv"}}

    binding = {
        "binding": {"namespace": "_", "name": "ow-pkg"},
        "parameters": [{"key": "a", "value": "binding"}],
    }
    bound = client.put(f"{NS}/packages/ow-bind?overwrite=true", json=binding)
    assert bound.status_code == 200, bound.text
    assert bound.json()["binding"] == {"namespace": "default", "name": "ow-pkg"}
    via = client.post(f"{NS}/actions/ow-bind/echo?blocking=true&result=true", json={})
    assert via.json() == {"args": {"a": "binding", "b": "action"}}
    shown = client.get(f"{NS}/actions/ow-bind/echo").json()
    assert {p["key"]: p["value"] for p in shown["parameters"]} == {"a": "binding", "b": "action"}
    cannot = client.put(f"{NS}/actions/ow-bind/other", json=action(HELLO))
    assert cannot.status_code == 400 and "binding" in cannot.json()["error"]
    foreign = {"binding": {"namespace": "someone-else", "name": "ow-pkg"}}
    assert client.put(f"{NS}/packages/ow-bad-bind", json=foreign).status_code == 403
    dangling = {"binding": {"namespace": "_", "name": "ow-no-such-pkg"}}
    assert client.put(f"{NS}/packages/ow-bad-bind", json=dangling).status_code == 404

    got = client.get(f"{NS}/packages/ow-pkg").json()
    assert [a["name"] for a in got["actions"]] == ["echo"] and got["feeds"] == []
    assert [a["name"] for a in client.get(f"{NS}/packages/ow-bind").json()["actions"]] == ["echo"]
    names = {p["name"]: p for p in client.get(f"{NS}/packages").json()}
    assert {"ow-pkg", "ow-bind"} <= set(names)
    assert names["ow-bind"]["binding"]["name"] == "ow-pkg"
    members = client.get(f"{NS}/actions/ow-pkg/").json()
    assert [(a["namespace"], a["name"]) for a in members] == [("default/ow-pkg", "echo")]
    everything = client.get(f"{NS}/actions", params={"limit": 200}).json()
    assert ("default/ow-pkg", "echo") in [(a["namespace"], a["name"]) for a in everything]
    assert client.get(f"{NS}/actions/echo").status_code == 404  # not a plain action
    assert client.get(f"{NS}/actions/ow-nopkg/echo").status_code == 404

    not_empty = client.delete(f"{NS}/packages/ow-pkg")
    assert not_empty.status_code == 409 and "not empty" in not_empty.json()["error"]
    assert client.delete(f"{NS}/packages/ow-bind").status_code == 200
    assert client.delete(f"{NS}/actions/ow-pkg/echo").status_code == 200
    assert client.delete(f"{NS}/packages/ow-pkg").status_code == 200
    assert client.get(f"{NS}/packages/ow-pkg").status_code == 404


def test_sequences_chain_their_components(client: httpx.Client) -> None:
    put_action(client, "ow-inc", INC, parameters=[{"key": "step", "value": 1}])
    assert client.put(f"{NS}/packages/ow-seqpkg?overwrite=true", json={}).status_code == 200
    r = client.put(f"{NS}/actions/ow-seqpkg/double?overwrite=true", json=action(DOUBLE))
    assert r.status_code == 200, r.text
    seq = {"exec": {"kind": "sequence", "components": ["/_/ow-inc", "/default/ow-seqpkg/double"]}}
    made = client.put(f"{NS}/actions/ow-seq?overwrite=true", json=seq)
    assert made.status_code == 200, made.text
    assert made.json()["exec"] == {
        "kind": "sequence",
        "binary": False,
        "components": ["/default/ow-inc", "/default/ow-seqpkg/double"],
    }
    listed = {a["name"]: a for a in client.get(f"{NS}/actions", params={"limit": 200}).json()}
    assert listed["ow-seq"]["exec"]["kind"] == "sequence"
    assert client.get("/v1/functions/ow-seq").status_code == 404  # a sequence runs no code

    full = client.post(f"{NS}/actions/ow-seq?blocking=true", json={"n": 1})
    assert full.status_code == 200, full.text
    record = full.json()
    assert record["response"]["result"] == {"n": 4}  # (1 + 1) * 2
    assert (
        record["name"] == "ow-seq"
        and record["activationId"] == full.headers["x-openwhisk-activation-id"]
    )
    assert {"key": "kind", "value": "sequence"} in record["annotations"]
    assert len(record["logs"]) == 2  # the component activation ids, in order
    first = finished(client, record["logs"][0])
    second = finished(client, record["logs"][1])
    assert first["name"] == "ow-inc" and first["response"]["result"] == {"n": 2}
    assert second["response"]["result"] == {"n": 4}
    assert first["cause"] == second["cause"] == record["activationId"]
    assert first["end"] <= second["start"] + 1

    assert client.post(f"{NS}/actions/ow-seq?blocking=true&result=true", json={"n": 5}).json() == {
        "n": 12
    }
    later = client.post(f"{NS}/actions/ow-seq", json={"n": 0})
    assert later.status_code == 202
    assert finished(client, later.json()["activationId"])["response"]["result"] == {"n": 2}

    put_action(client, "ow-seq-fail", FAIL)
    bad = {"exec": {"kind": "sequence", "components": ["/_/ow-inc", "/_/ow-seq-fail", "ow-inc"]}}
    assert client.put(f"{NS}/actions/ow-seq-bad?overwrite=true", json=bad).status_code == 200
    failed = client.post(f"{NS}/actions/ow-seq-bad?blocking=true", json={})
    assert failed.status_code == 502, failed.text
    assert failed.json()["response"]["success"] is False
    assert "boom" in failed.json()["response"]["result"]["error"]
    assert len(failed.json()["logs"]) == 2  # the third never ran

    nothing = {"exec": {"kind": "sequence", "components": ["/_/ow-no-such-action"]}}
    missing = client.put(f"{NS}/actions/ow-seq-x", json=nothing)
    assert missing.status_code == 400 and "does not exist" in missing.json()["error"]
    empty = client.put(f"{NS}/actions/ow-seq-x", json={"exec": {"kind": "sequence"}})
    assert empty.status_code == 400
    foreign = {"exec": {"kind": "sequence", "components": ["/someone-else/ow-inc"]}}
    assert client.put(f"{NS}/actions/ow-seq-x", json=foreign).status_code == 403
    assert client.delete(f"{NS}/actions/ow-seq").status_code == 200
    assert client.get(f"{NS}/actions/ow-seq").status_code == 404


def test_a_rule_can_fire_a_sequence_and_a_package_action(client: httpx.Client) -> None:
    put_action(client, "ow-inc2", INC)
    seq = {"exec": {"kind": "sequence", "components": ["/_/ow-inc2", "/_/ow-inc2"]}}
    assert client.put(f"{NS}/actions/ow-seq2?overwrite=true", json=seq).status_code == 200
    pkg = {"parameters": [{"key": "step", "value": 100}]}
    assert client.put(f"{NS}/packages/ow-rpkg?overwrite=true", json=pkg).status_code == 200
    assert client.put(f"{NS}/actions/ow-rpkg/inc?overwrite=true", json=action(INC)).is_success
    assert client.put(f"{NS}/triggers/ow-seq-t?overwrite=true", json={}).status_code == 200
    rule = {"trigger": "ow-seq-t", "action": "ow-seq2"}
    assert client.put(f"{NS}/rules/ow-seq-r?overwrite=true", json=rule).status_code == 200
    rule = {"trigger": "ow-seq-t", "action": "/_/ow-rpkg/inc"}
    made = client.put(f"{NS}/rules/ow-seq-r2?overwrite=true", json=rule)
    assert made.status_code == 200, made.text
    assert made.json()["action"] == {"name": "inc", "path": "default/ow-rpkg"}
    shown = client.get(f"{NS}/triggers/ow-seq-t").json()["rules"]
    assert shown["default/ow-seq-r2"]["action"] == {"name": "inc", "path": "default/ow-rpkg"}
    fired = client.post(f"{NS}/triggers/ow-seq-t", json={"n": 10})
    assert fired.status_code == 202, fired.text
    fire_id = fired.json()["activationId"]
    lines = [json.loads(x) for x in client.get(f"{NS}/activations/{fire_id}").json()["logs"]]
    assert [x["action"] for x in lines] == ["default/ow-seq2", "default/ow-rpkg/inc"]
    done = finished(client, lines[0]["activationId"])
    assert done["response"]["result"] == {"n": 12} and done["cause"] == fire_id
    packaged = finished(client, lines[1]["activationId"])
    assert packaged["response"]["result"] == {"n": 110}  # the package's parameter
    for name in ("ow-seq-r", "ow-seq-r2"):
        assert client.delete(f"{NS}/rules/{name}").status_code == 200


def test_web_actions_are_refused_clearly(client: httpx.Client) -> None:
    web = action(HELLO, annotations=[{"key": "web-export", "value": True}])
    r = client.put(f"{NS}/actions/ow-web", json=web)
    assert r.status_code == 400 and "web actions are not supported" in r.json()["error"]
    with httpx.Client(base_url=str(client.base_url)) as anonymous:
        called = anonymous.get("/api/v1/web/default/default/ow-web.json")
        assert called.status_code == 404
        assert "web actions are not supported" in called.json()["error"]


def _hold(platform: Platform, activation_id: str, doc: dict[str, Any] | None) -> bool:
    """Write the hold of a gateway that died (``doc``, run out long ago), or, with None, say
    whether a hold on ``activation_id`` is still there."""

    async def go() -> bool:
        nc = await nats.connect(platform.nats.admin_url)
        try:
            kv = await nc.jetstream().key_value(SEQUENCES_KV)
            key = activation_id
            if doc is not None:
                await kv.put(key, json.dumps({**doc, "owner": "gone", "until": 0}).encode())
                return True
            try:
                return bool((await kv.get(key)).value)
            except nats.js.errors.KeyNotFoundError:
                return False
        finally:
            await nc.close()

    return asyncio.run(go())


def _sequence_doc(client: httpx.Client, name: str, params: dict[str, Any]) -> dict[str, Any]:
    components = client.get(f"{NS}/actions/{name}").json()["exec"]["components"]
    meta = {"kind": "sequence", "components": components, "version": 1}
    return {"ref": {"ns": "default", "name": name}, "meta": meta, "params": params, "cause": None}


def test_a_sequence_held_by_a_dead_gateway_runs_and_a_finished_one_runs_no_more(
    client: httpx.Client, platform: Platform
) -> None:
    """What a gateway killed at either end of a sequence leaves: a hold and nothing else (it
    died right after writing it), or a hold beside a finished record (it died before dropping
    it). A running gateway takes each over once the hold has run out (`SequenceKeeper`): the
    first runs from its start, the second is only let go."""
    put_action(client, "ow-held-inc", "def main(args):\n    return {'n': args['n'] + 1}\n")
    seq = {"exec": {"kind": "sequence", "components": ["ow-held-inc", "ow-held-inc"]}}
    assert client.put(f"{NS}/actions/ow-held?overwrite=true", json=seq).status_code == 200

    never_started = new_activation_id()
    _hold(platform, never_started, _sequence_doc(client, "ow-held", {"n": 1}))
    record = finished(client, never_started, timeout=60)
    assert record["response"]["result"] == {"n": 3} and len(record["logs"]) == 2
    wait_for(lambda: not _hold(platform, never_started, None), timeout=30)

    done = client.post(f"{NS}/actions/ow-held?blocking=true", json={"n": 10}).json()
    assert done["response"]["result"] == {"n": 12}
    before = [
        client.get(f"/v1/activations/{i}").json() for i in [done["activationId"], *done["logs"]]
    ]
    _hold(platform, done["activationId"], _sequence_doc(client, "ow-held", {"n": 10}))
    wait_for(lambda: not _hold(platform, done["activationId"], None), timeout=30)
    after = [
        client.get(f"/v1/activations/{i}").json() for i in [done["activationId"], *done["logs"]]
    ]
    assert after == before  # nothing ran or was written again
