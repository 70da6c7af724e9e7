"""The API says what it does: odd parameters are 4xx problems, 405 names what is allowed,
the spec lists the errors, activations page with a cursor, uploads keep a guessed type, and a
built-in function's bad input is final (issue 12, found by schemathesis and by hand)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.functions import NOOP
from tests.support import Platform, wait_activation, wait_for

PROBLEM = "application/problem+json"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/triggers?function=%C3%A9t%C3%A9",  # non-ASCII name filter
        "/v1/activations?function=%C3%A9t%C3%A9",
        "/v1/activations?after=18446744073709551616",
        "/v1/activations/a%20b",  # a space: no KV key can hold it
        "/v1/activations/a%20b/logs",
        "/v1/activations/a%20b/result",
        "/v1/activations/%00",
        "/v1/activations/%E2%98%83",
        "/v1/catalog/modules/m/versions/18446744073709551616",  # past 64 bits
        "/v1/dlq/18446744073709551616",
        "/v1/functions/a%00b",
        "/v1/auth/keys/a%20b",
    ],
)
def test_odd_parameters_are_client_errors(client: httpx.Client, path: str) -> None:
    method = "DELETE" if path.startswith("/v1/auth/keys") else "GET"
    r = client.request(method, path)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert r.headers["content-type"] == PROBLEM


def test_training_ids_with_spaces_are_client_errors(client: httpx.Client) -> None:
    r = client.get("/v2/models/x/train/a%20b")
    assert 400 <= r.status_code < 500, (r.status_code, r.text)


def test_catalog_version_numbers_past_json_integers_are_refused(client: httpx.Client) -> None:
    r = client.post("/v1/catalog/modules/m/versions/18446744073709551616/retire", json={})
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM


@pytest.mark.parametrize(
    "body",
    [{}, {"action": "list"}, {"template": None}, {"template": "x", "spec": None}],
)
def test_a_deployment_needs_exactly_one_source(client: httpx.Client, body: dict[str, Any]) -> None:
    r = client.post("/v1/deployments", json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM


@pytest.mark.parametrize("number", [18446744073709551616, -(2**70)])
def test_a_body_integer_past_64_bits_is_refused(client: httpx.Client, number: int) -> None:
    """Python reads any integer; what a route sends on the bus is JSON its peers read (found by
    schemathesis: `POST /v1/deployments` answered 500)."""
    body = {"spec": {"name": "big", "function": "f"}, "inputs": {"n": number}}
    r = client.post("/v1/deployments", json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM


def test_trigger_params_past_64_bits_are_refused(client: httpx.Client) -> None:
    """Each fire writes a trigger's params into an invocation: such a trigger would be retried
    for ever on every event it matched."""
    body = {"name": "big", "function": "f", "event_types": ["x.y"], "params": {"n": 2**64}}
    r = client.post("/v1/triggers", json=body)
    assert r.status_code == 422, r.text
    assert "64-bit" in r.text


def test_deleting_an_absent_dead_letter_is_404(client: httpx.Client) -> None:
    r = client.delete("/v1/dlq/987654")
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("TRACE", "/v1/functions", {"GET", "POST"}),
        ("TRACE", "/v1/triggers/t", {"GET", "PUT", "DELETE"}),
        ("OPTIONS", "/v1/activations/abc", {"GET"}),
        ("PATCH", "/healthz", {"GET"}),
    ],
)
def test_unsupported_methods_get_405_with_allow(
    client: httpx.Client, method: str, path: str, allowed: set[str]
) -> None:
    r = client.request(method, path)
    assert r.status_code == 405
    assert allowed <= {m.strip() for m in r.headers["allow"].split(",")}
    assert method not in r.headers["allow"]


def test_the_spec_lists_errors_and_constraints(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    triggers = paths["/v1/triggers"]["get"]["responses"]
    for status in ("401", "403", "422", "429"):
        assert PROBLEM in triggers[status]["content"], status
    assert "404" in paths["/v1/activations/{activation_id}"]["get"]["responses"]
    assert "409" in paths["/v1/triggers"]["post"]["responses"]
    ow = paths["/api/v1/namespaces/{ns}/actions"]["get"]["responses"]
    assert "application/json" in ow["401"]["content"] and "422" not in ow
    schemas = spec["components"]["schemas"]
    assert schemas["DeploymentIn"]["oneOf"] == [
        {"required": ["template"]},
        {"required": ["template_path"]},
        {"required": ["spec"]},
    ]
    body = paths["/v1/triggers"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "anyOf" in schemas[body["$ref"].rsplit("/", 1)[1]]
    [bucket] = paths["/v1/buckets/{bucket}"]["put"]["parameters"]
    assert bucket["schema"]["pattern"].startswith("^[a-z0-9]")
    [activation] = paths["/v1/activations/{activation_id}"]["get"]["parameters"]
    assert activation["schema"]["pattern"]


def test_activations_page_past_the_limit_with_a_cursor(client: httpx.Client) -> None:
    r = client.put("/v1/functions/pager", json={"handler": "main", "code": NOOP})
    assert r.status_code in (200, 201), r.text
    made = []
    for _ in range(5):
        r = client.post("/v1/functions/pager/invoke", json={})
        assert r.status_code == 200, r.text
        made.append(r.headers["x-activation-id"])
    for activation_id in made:
        wait_activation(client, activation_id)
    seen: list[str] = []
    url: str | None = "/v1/activations?function=pager&limit=2"
    while url is not None:
        r = client.get(url)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page) <= 2
        seen += [a["id"] for a in page]
        url = r.links.get("next", {}).get("url")
        if url is not None:
            assert r.headers["x-next-after"] in url
    assert seen == list(reversed(made))


def test_an_upload_without_a_type_gets_the_one_its_name_says(client: httpx.Client) -> None:
    assert client.put("/v1/buckets/typed").status_code in (200, 201)
    cases = {
        "a.png": (None, "image/png"),
        "b.png": ("application/octet-stream", "image/png"),
        "c.png": ("text/plain", "text/plain"),
        "d.unknown-ext": (None, "application/octet-stream"),
        "e.tar.gz": (None, "application/octet-stream"),
    }
    for key, (sent, _) in cases.items():
        headers = {"content-type": sent} if sent else {}
        r = client.put(f"/v1/buckets/typed/objects/{key}", content=b"bytes", headers=headers)
        assert r.status_code == 201, r.text
    for key, (_, stored) in cases.items():
        r = client.head(f"/v1/buckets/typed/objects/{key}")
        assert r.headers["content-type"].split(";")[0] == stored, key


def test_thumbnail_of_a_text_file_is_invalid_at_once(
    client: httpx.Client, platform: Platform
) -> None:
    for bucket in ("notes-in", "notes-thumbs"):
        assert client.put(f"/v1/buckets/{bucket}").status_code in (200, 201)
    r = client.put(
        "/v1/functions/thumbnail",
        json={"handler": "functions.thumbnail.handler:handle", "timeout_s": 30},
    )
    assert r.status_code in (200, 201), r.text
    r = client.post(
        "/v1/triggers",
        json={
            "name": "thumb-notes",
            "function": "thumbnail",
            "bucket": "notes-in",
            "output": {"bucket": "notes-thumbs"},
        },
    )
    assert r.status_code == 201, r.text
    r = client.put("/v1/buckets/notes-in/objects/readme.txt", content=b"not an image")
    assert r.status_code == 201, r.text

    def ended() -> dict[str, Any] | None:
        found = client.get("/v1/activations?function=thumbnail").json()
        done = [a for a in found if a["status"] not in ("running", "retrying")]
        return done[0] if done else None

    summary = wait_for(ended, timeout=30)
    record = client.get(f"/v1/activations/{summary['id']}").json()
    assert record["status"] == "invalid", record
    assert record["attempts"] == 1
    assert "not a readable image" in record["error"]
    # an async run that did not succeed leaves one dead letter, after its one try
    letters = client.get("/v1/dlq", params={"function": "thumbnail"}).json()
    assert [letter["attempts"] for letter in letters] == [1]
