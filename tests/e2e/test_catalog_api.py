"""/v1/catalog over HTTP against the real platform: publish, browse, search, version, promote,
retire, roll back, with the catalog CloudEvents seen on NATS, and each bad input a clear error."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import nats
import pytest
from nats.aio.msg import Msg

from eventbus.codec import from_nats
from runtimes.catalog.plugins import load_model_plugin
from tests.support import Platform, eventually

PREFIX = "io.deepfaas"
SPEC = {
    "name": "digits",
    "description": "handwritten digits, 8x8 grey scale",
    "keywords": ["vision", "digits"],
    "framework": "scikit-learn",
    "tolerance": 0.02,
}


@pytest.fixture(scope="module")
def artifact() -> tuple[bytes, dict[str, float]]:
    """A digits version trained in-process with the plug-in (its own data)."""
    trained = load_model_plugin("digits").train_default()
    return trained.artifact, trained.metrics


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    return body


def _add(client: httpx.Client, key: str, metrics: dict[str, float]) -> dict[str, Any]:
    body = {"artifact": {"bucket": "artifacts", "key": key}, "metrics": metrics}
    return _ok(client.post("/v1/catalog/modules/digits/versions", json=body), 201)  # type: ignore[no-any-return]


def _flow(platform: Platform, art: tuple[bytes, dict[str, float]]) -> None:
    data, metrics = art
    with platform.client(timeout=60) as client:
        module = _ok(client.post("/v1/catalog/modules", json=SPEC), 201)
        assert module["name"] == "digits" and module["promoted"] is None and module["latest"] == 0
        _problem(client.post("/v1/catalog/modules", json=SPEC), 409)
        other = {"name": "iris", "description": "flowers", "framework": "xgboost"}
        _ok(client.put("/v1/catalog/modules/iris", json=other))

        assert [m["name"] for m in _ok(client.get("/v1/catalog/modules"))] == ["digits", "iris"]
        assert [m["name"] for m in _ok(client.get("/v1/catalog/modules?q=HANDWRITTEN"))] == [
            "digits"
        ]
        assert [m["name"] for m in _ok(client.get("/v1/catalog/modules?keyword=vision"))] == [
            "digits"
        ]
        found = _ok(client.get("/v1/catalog/modules?framework=xgboost"))
        assert [m["name"] for m in found] == ["iris"]
        assert _ok(client.get("/v1/catalog/modules/digits"))["tolerance"] == 0.02
        # browsing is anonymous
        assert httpx.get(f"{platform.url}/v1/catalog/modules/digits").status_code == 200

        assert client.put("/v1/buckets/artifacts").status_code in (200, 201)
        for key in ("v1.bin", "v2.bin"):
            r = client.put(f"/v1/buckets/artifacts/objects/{key}", content=data)
            assert r.status_code == 201, r.text
        first = _add(client, "v1.bin", metrics)["version"]
        assert first["version"] == 1 and first["state"] == "candidate"
        assert first["artifact"]["size"] == len(data)
        assert _ok(client.post("/v1/catalog/modules/digits/versions/1/promote"))["state"] == (
            "promoted"
        )
        second = _ok(
            client.post(
                "/v1/catalog/modules/digits/versions",
                json={
                    "artifact": {"bucket": "artifacts", "key": "v2.bin"},
                    "metrics": metrics,
                    "gate": True,
                },
            ),
            201,
        )
        assert second["version"]["version"] == 2 and second["gate"]["promote"] is True
        assert second["version"]["state"] == "promoted"
        assert second["version"]["lineage"]["parent"] == 1
        states = {
            v["version"]: v["state"] for v in _ok(client.get("/v1/catalog/modules/digits/versions"))
        }
        assert states == {1: "candidate", 2: "promoted"}

        # retiring the promoted version is refused; a candidate may be retired
        assert (
            "promoted"
            in _problem(client.post("/v1/catalog/modules/digits/versions/2/retire"), 409)["detail"]
        )
        rolled = _ok(client.post("/v1/catalog/modules/digits/rollback"))
        assert rolled["version"] == 1 and rolled["state"] == "promoted"
        retired = _ok(
            client.post("/v1/catalog/modules/digits/versions/2/retire", json={"reason": "bad"})
        )
        assert retired["state"] == "retired" and retired["reason"] == "bad"
        assert _problem(client.post("/v1/catalog/modules/digits/versions/2/promote"), 409)
        module = _ok(client.get("/v1/catalog/modules/digits"))
        assert module["promoted"] == 1 and module["latest"] == 2

        # bad input
        assert "nope" in _problem(client.get("/v1/catalog/modules/nope"), 404)["detail"]
        missing = _problem(client.get("/v1/catalog/modules/digits/versions/9"), 404)
        assert "versions: [1, 2]" in missing["detail"]
        assert _problem(client.post("/v1/catalog/modules/digits/versions/9/promote"), 404)
        _problem(client.post("/v1/catalog/modules", json={**SPEC, "name": "Bad Name!"}), 422)
        _problem(client.get("/v1/catalog/modules/Bad%20Name"), 422)
        body = {"artifact": {"bucket": "artifacts", "key": "absent.bin"}}
        _problem(client.post("/v1/catalog/modules/digits/versions", json=body), 404)
        # publishing needs a key
        assert httpx.post(f"{platform.url}/v1/catalog/modules", json=SPEC).status_code == 401

        assert client.delete("/v1/catalog/modules/iris").status_code == 204
        _problem(client.get("/v1/catalog/modules/iris"), 404)


#: every kind of catalog event the flow makes
KINDS = (
    "module.published",
    "model.version.created",
    "model.version.promoted",
    "model.version.retired",
    "module.deleted",
)


async def test_catalog_over_http_announces_each_change(
    platform: Platform, artifact: tuple[bytes, dict[str, float]]
) -> None:
    seen: list[str] = []

    async def got(msg: Msg) -> None:
        seen.append(from_nats(msg.headers, msg.data).type)

    conn = await nats.connect(platform.nats.admin_url)
    try:
        await conn.subscribe("events.>", cb=got)
        await conn.flush()
        await asyncio.to_thread(_flow, platform, artifact)
        # each event reaches this subscriber a moment after its route answered: wait for the
        # last of them (a CI run read the list before `module.deleted` came)
        with contextlib.suppress(AssertionError):  # the assertions below say what is missing
            await eventually(lambda: {f"{PREFIX}.catalog.{k}" for k in KINDS} <= set(seen))
    finally:
        await conn.close()
    catalog = [t.removeprefix(f"{PREFIX}.catalog.") for t in seen if ".catalog." in t]
    assert catalog.count("module.published") == 2, catalog  # digits, then iris by PUT
    for kind in KINDS:
        assert kind in catalog, catalog
    assert catalog.count("model.version.created") == 2
    assert catalog.count("model.version.promoted") == 3  # v1, v2 by the gate, v1 by rollback
