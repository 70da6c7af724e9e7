"""The batch door: POST /v1/functions/{name}/invocations queues each input as its own activation.

Against the real platform (`deepfaas up`, real nats-server, a sandboxed worker): the 202 lists
one id per input in order, every id is its own activation with its own input as the result;
bodies outside 1 to 1,000 inputs are 422 problems, bodies over the size cap 413, and a second
namespace's key neither reaches the first namespace's function nor sees its activations.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.functions import NOOP
from tests.support import Platform, wait_activation

DOOR = "/v1/functions/echo/invocations"


@pytest.fixture(scope="module")
def deployed(platform: Platform) -> Platform:
    with platform.client(timeout=60) as client:
        spec = {"handler": "main", "code": NOOP, "concurrency": 32, "max_scale": 1}
        r = client.put("/v1/functions/echo", json=spec)
        assert r.status_code in (200, 201), r.text
    return platform


@pytest.fixture(scope="module")
def tenant_key(platform: Platform) -> str:
    with platform.client() as admin:
        r = admin.post("/v1/auth/keys", json={"namespace": "tenant-b"})
    assert r.status_code == 201, r.text
    key: str = r.json()["key"]
    return key


@pytest.fixture
def tenant(platform: Platform, tenant_key: str) -> Iterator[httpx.Client]:
    with platform.client(auth=tenant_key) as c:
        yield c


def _problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    doc: dict[str, Any] = r.json()
    assert doc["status"] == status
    return doc


def test_each_input_is_its_own_activation(deployed: Platform, client: httpx.Client) -> None:
    inputs: list[Any] = [{"n": 1}, {"n": 2, "s": "two"}, {"list": [3]}, {"s": "four"}, {}]
    r = client.post(DOOR, json={"inputs": inputs})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "accepted" and body["count"] == len(inputs)
    ids = body["activation_ids"]
    assert len(ids) == len(set(ids)) == len(inputs)
    for activation_id, given in zip(ids, inputs, strict=True):
        record = wait_activation(client, activation_id, timeout=90)
        assert record["status"] == "success", record
        assert record["mode"] == "async"
        assert record["result"] == given  # the no-op returns its own input


def test_a_thousand_inputs_are_stored_before_the_202(
    deployed: Platform, client: httpx.Client
) -> None:
    r = client.post(DOOR, json={"inputs": [{"i": i} for i in range(1000)]})
    assert r.status_code == 202, r.text
    ids = r.json()["activation_ids"]
    assert len(set(ids)) == 1000
    # each one is queued (or done) the moment the 202 arrives: a record exists or completes
    last = wait_activation(client, ids[-1], timeout=120)
    assert last["result"] == {"i": 999}

    sample = [wait_activation(client, ids[i], timeout=120) for i in (0, 1, 500, 998)]
    assert [rec["result"]["i"] for rec in sample] == [0, 1, 500, 998]


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": [{}] * 1001},
        {"inputs": []},
        {"inputs": {"not": "a list"}},
        {"inputs": [{"a": 1}, "not an object"]},
        {"input": [{}]},
        [{"a": 1}],
        {"inputs": [{}], "callback": "ftp://nope"},
    ],
    ids=["1001", "empty", "object", "not-objects", "unknown-field", "bare-list", "bad-callback"],
)
def test_bodies_outside_the_rules_are_422(
    deployed: Platform, client: httpx.Client, body: Any
) -> None:
    _problem(client.post(DOOR, json=body), 422)


def test_an_integer_past_64_bits_is_422(deployed: Platform, client: httpx.Client) -> None:
    body = b'{"inputs": [{"n": 1}, {"n": 18446744073709551616}]}'
    r = client.post(DOOR, content=body, headers={"content-type": "application/json"})
    _problem(r, 422)
    assert "64-bit" in r.json()["detail"]


def test_malformed_json_and_oversized_bodies(deployed: Platform, client: httpx.Client) -> None:
    bad = client.post(DOOR, content=b'{"inputs": [', headers={"content-type": "application/json"})
    assert bad.status_code in (400, 422) and bad.headers["content-type"].startswith(
        "application/problem+json"
    )
    huge = orjson.dumps({"inputs": [{"x": "x" * 7000}] * 1000})  # ~7 MB, over the 6 MiB cap
    _problem(client.post(DOOR, content=huge, headers={"content-type": "application/json"}), 413)


def test_unknown_function_is_404(deployed: Platform, client: httpx.Client) -> None:
    _problem(client.post("/v1/functions/nobody/invocations", json={"inputs": [{}]}), 404)


def test_another_namespace_is_refused(
    deployed: Platform, client: httpx.Client, tenant: httpx.Client
) -> None:
    # the tenant's `echo` is its own name: default's function is not reachable from it
    _problem(tenant.post(DOOR, json={"inputs": [{"steal": True}]}), 404)
    mine = client.post(DOOR, json={"inputs": [{"secret": 1}]})
    assert mine.status_code == 202
    activation_id = mine.json()["activation_ids"][0]
    wait_activation(client, activation_id, timeout=90)
    _problem(tenant.get(f"/v1/activations/{activation_id}"), 404)
    anonymous = httpx.post(f"{deployed.url}{DOOR}", json={"inputs": [{}]})
    _problem(anonymous, 401)
