"""Bad input gets a clear 4xx problem and disturbs nothing else."""

from __future__ import annotations

import concurrent.futures
from typing import Any

import httpx

from tests.e2e.functions import HELLO, NOOP
from tests.e2e.test_invoke import deploy


def _problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["title"] and body["type"] and body["detail"]
    return body


def test_malformed_json_is_400(client: httpx.Client) -> None:
    deploy(client, "hello", HELLO)
    r = client.post(
        "/v1/functions/hello/invoke",
        content=b'{"name": ',
        headers={"content-type": "application/json"},
    )
    assert "not valid JSON" in _problem(r, 400)["detail"]


def test_input_failing_the_model_is_422_naming_the_field(client: httpx.Client) -> None:
    deploy(client, "hello", HELLO)
    body = _problem(client.post("/v1/functions/hello/invoke", json={"times": "many"}), 422)
    assert "name" in body["detail"] and "times" in body["detail"]
    locs = [tuple(e["loc"]) for e in body["errors"]]
    assert ("name",) in locs and ("times",) in locs


def test_unknown_function_is_404(client: httpx.Client) -> None:
    _problem(client.post("/v1/functions/nope/invoke", json={}), 404)
    _problem(client.get("/v1/functions/nope"), 404)
    _problem(client.get("/v1/activations/0123456789abcdef"), 404)


def test_oversized_body_is_413_with_a_hint(client: httpx.Client) -> None:
    deploy(client, "noop", NOOP)
    big = b'{"x": "' + b"a" * (6 * 1024 * 1024 + 10) + b'"}'
    body = _problem(
        client.post(
            "/v1/functions/noop/invoke", content=big, headers={"content-type": "application/json"}
        ),
        413,
    )
    assert "storage" in body["detail"]


def test_invalid_function_specs_are_422(client: httpx.Client) -> None:
    bad_specs = [
        {"handler": "main", "code": NOOP, "timeout_s": -1},
        {"handler": "main", "code": NOOP, "min_scale": 5, "max_scale": 1},
        {"handler": "not a handler!", "code": NOOP},
        {"handler": "main"},
        {"handler": "main", "code": NOOP, "gpu": -2},
        {"handler": "main", "code": NOOP, "unknown_field": 1},
    ]
    for spec in bad_specs:
        _problem(client.put("/v1/functions/badspec", json=spec), 422)
    _problem(client.put("/v1/functions/Bad_Name!", json={"handler": "main", "code": NOOP}), 422)
    assert client.get("/v1/functions/badspec").status_code == 404


def test_code_with_a_syntax_error_is_refused_at_deploy(client: httpx.Client) -> None:
    body = _problem(
        client.put("/v1/functions/broken", json={"handler": "main", "code": "def main(:"}), 422
    )
    assert "syntax error at line 1" in body["detail"]


def test_code_that_fails_to_import_fails_its_activations_with_the_reason(
    client: httpx.Client,
) -> None:
    deploy(client, "badimport", "import no_such_module_here\ndef main(p):\n    return p\n")
    body = _problem(client.post("/v1/functions/badimport/invoke", json={}), 502)
    assert "failed to load" in body["detail"] and "no_such_module_here" in body["detail"]


def test_bad_requests_do_not_disturb_good_ones(client: httpx.Client) -> None:
    deploy(client, "hello", HELLO)
    bad = [
        lambda c: c.post(
            "/v1/functions/hello/invoke", content=b"{", headers={"content-type": "application/json"}
        ),
        lambda c: c.post("/v1/functions/hello/invoke", json={"times": 1}),
        lambda c: c.post("/v1/functions/ghost/invoke", json={}),
    ]
    good = lambda c: c.post("/v1/functions/hello/invoke", json={"name": "ok"})  # noqa: E731
    calls = [bad[i % 3] for i in range(30)] + [good] * 30
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda f: f(client), calls))
    assert sorted(r.status_code for r in results[:30]) == [400] * 10 + [404] * 10 + [422] * 10
    assert all(r.status_code == 200 and r.json()["greeting"] == "Hello ok!" for r in results[30:])


def test_curl_style_bodies_are_taken_as_json_or_forms(client: httpx.Client) -> None:
    deploy(client, "echo", NOOP)
    form = {"content-type": "application/x-www-form-urlencoded"}
    r = client.post("/v1/functions/echo/invoke", content=b'{"a": 1}', headers=form)
    assert r.status_code == 200 and r.json() == {"a": 1}
    r = client.post("/v1/functions/echo/invoke", content=b"a=1&b=two", headers=form)
    assert r.status_code == 200 and r.json() == {"a": "1", "b": "two"}


def test_event_stream_refuses_an_invalid_filter(client: httpx.Client) -> None:
    body = _problem(
        client.get("/v1/events/stream", params={"filter": '[{"exakt": {"a": "b"}}]'}), 422
    )
    assert "exakt" in body["detail"]
    _problem(client.get("/v1/events/stream", params={"filter": "{not json"}), 422)
