"""Every catalog write is authorised by namespace, no artifact runs code, /metrics names nothing.

Against the real platform (`deepfaas up`, real nats-server, the built-in `inference` and
`retrain`, the digits plug-in): `default` publishes and trains `digits`; a key of `tenant-b`
tries every catalog write on it and is refused with nothing changed; artifacts are registered
only from the caller's own buckets and only in the plug-in's safe format; a pickle crafted to
run code never runs, neither at registration nor when promoted behind the API's back.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventbus.connection import Bus
from eventbus.server import EmbeddedNats
from eventbus.storage.local import LocalStorage
from runtimes.catalog import CatalogStore, Lineage
from runtimes.catalog.plugins import load_model_plugin
from tests.models.crafted import code_pickle, digits_format_1
from tests.models.samples import digits, png
from tests.support import Platform, start_platform, wait_activation, wait_for

TENANT = "tenant-b"
RULE = "only the namespace that published a module may change it"
CATALOG = "/v1/catalog/modules"


@pytest.fixture(scope="module")
def served(
    nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """The platform with `digits` published and trained by `default`, v1 promoted."""
    platform = start_platform(
        nats_server, Path(tmp_path_factory.mktemp("platform")), builtins="inference,retrain"
    )
    try:
        with platform.client(timeout=90) as admin:
            assert admin.post("/v1/catalog/publish/digits").status_code == 201
            _trained(admin, admin.post("/v2/models/digits/train/"))
            assert admin.put("/v1/buckets/artifacts").status_code in (200, 201)
        yield platform
    finally:
        platform.stop()


@pytest.fixture
def admin(served: Platform) -> Iterator[httpx.Client]:
    with served.client(timeout=90) as c:
        yield c


@pytest.fixture(scope="module")
def tenant_key(served: Platform) -> str:
    """A key of a second namespace, made by the default namespace's admin key."""
    with served.client() as admin:
        r = admin.post("/v1/auth/keys", json={"namespace": TENANT})
    assert r.status_code == 201, r.text
    key: str = r.json()["key"]
    return key


@pytest.fixture
def tenant(served: Platform, tenant_key: str) -> Iterator[httpx.Client]:
    with served.client(timeout=90, auth=tenant_key) as c:
        yield c


def _trained(client: httpx.Client, started: httpx.Response) -> dict[str, Any]:
    assert started.status_code == 200, started.text
    href = f"/v2/models/digits/train/{started.json()['uuid']}"

    def finished() -> dict[str, Any] | None:
        r = client.get(href)
        if r.status_code == 404:
            return None
        body: dict[str, Any] = r.json()
        return body if body["status"] != "running" else None

    done: dict[str, Any] = wait_for(finished, timeout=120, interval=0.2)
    assert done["status"] == "done", done
    return done


def _refused(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 403, response.text
    assert "default" not in response.text  # the rule, not who owns it
    if response.url.path.startswith("/v2/"):  # DEEPaaS's routes answer errors as DEEPaaS does
        assert response.headers["content-type"].startswith("text/plain")
        return {"detail": response.text}
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert "default" not in response.text  # the rule, not who owns it
    return body


def _snapshot(client: httpx.Client, name: str) -> tuple[Any, Any]:
    module = client.get(f"{CATALOG}/{name}").json()
    versions = client.get(f"{CATALOG}/{name}/versions").json()
    return module, versions


def _upload(client: httpx.Client, key: str, data: bytes) -> None:
    r = client.put(f"/v1/buckets/artifacts/objects/{key}", content=data)
    assert r.status_code == 201, r.text


def _png_body(index: int = 0) -> dict[str, Any]:
    return {"data": base64.b64encode(png(digits().x[index])).decode(), "filename": "d.png"}


def test_a_foreign_key_changes_nothing_in_the_catalog(
    admin: httpx.Client, tenant: httpx.Client
) -> None:
    trained = load_model_plugin("digits").train_default()
    _upload(admin, "good.bin", trained.artifact)
    before = _snapshot(admin, "digits")
    trainings = len(admin.get("/v2/models/digits/train/").json())
    spec = {"name": "digits", "plugin": "digits", "title": "mine now"}
    register = {"artifact": {"bucket": "artifacts", "key": "good.bin"}, "metrics": {"a": 1.0}}
    for method, path, body in [
        ("PUT", f"{CATALOG}/digits", spec),
        ("POST", CATALOG, spec),
        ("POST", "/v1/catalog/publish/digits", None),
        ("POST", "/v1/catalog/publish/digits?replace=true", None),
        ("POST", f"{CATALOG}/digits/versions", register),
        ("POST", f"{CATALOG}/digits/versions/1/promote", None),
        ("POST", f"{CATALOG}/digits/versions/1/retire", {"reason": "mine"}),
        ("POST", f"{CATALOG}/digits/rollback", {"to": 1}),
        ("DELETE", f"{CATALOG}/digits", None),
        ("POST", "/v2/models/digits/train/", None),
        ("POST", "/v2/models/digits/train/", {"holdout": 0.3}),
    ]:
        problem = _refused(tenant.request(method, path, json=body))
        assert RULE in problem["detail"], (method, path, problem)
    assert _snapshot(admin, "digits") == before
    assert len(admin.get("/v2/models/digits/train/").json()) == trainings
    # reading stays open to every namespace, and anonymous
    assert tenant.get(f"{CATALOG}/digits").json()["owner"] == "default"
    assert tenant.get("/v2/models/digits/").status_code == 200


def test_artifacts_come_only_from_the_callers_own_buckets(
    admin: httpx.Client, tenant: httpx.Client
) -> None:
    published = tenant.post(CATALOG, json={"name": "tenant-digits", "plugin": "digits"})
    assert published.status_code == 201, published.text
    assert published.json()["owner"] == TENANT
    _upload(admin, "secret.bin", load_model_plugin("digits").train_default().artifact)
    answers = [
        tenant.post(
            f"{CATALOG}/tenant-digits/versions",
            json={"artifact": {"bucket": "artifacts", "key": key}},
        )
        for key in ("secret.bin", "absent.bin")
    ]
    for r in answers:
        assert "bucket 'artifacts' is not one of your namespace's" in _refused(r)["detail"]
    assert answers[0].json()["detail"] == answers[1].json()["detail"]  # existence not told
    assert tenant.get(f"{CATALOG}/tenant-digits/versions").json() == []
    # the owner rule holds both ways: default cannot change the tenant's module either
    _refused(admin.put(f"{CATALOG}/tenant-digits", json={"name": "tenant-digits"}))
    _refused(admin.delete(f"{CATALOG}/tenant-digits"))
    # ...and the tenant may change its own
    updated = tenant.put(
        f"{CATALOG}/tenant-digits",
        json={"name": "tenant-digits", "plugin": "digits", "title": "ours"},
    )
    assert updated.status_code == 200 and updated.json()["owner"] == TENANT
    assert tenant.delete(f"{CATALOG}/tenant-digits").status_code == 204


def test_a_crafted_pickle_is_refused_at_registration_and_never_runs(
    admin: httpx.Client, tmp_path: Path
) -> None:
    marker = tmp_path / "registered-and-ran"
    before = _snapshot(admin, "digits")
    for key, data in (("bare.pkl", code_pickle(marker)), ("v1.bin", digits_format_1(marker))):
        _upload(admin, key, data)
        r = admin.post(
            f"{CATALOG}/digits/versions",
            json={"artifact": {"bucket": "artifacts", "key": key}, "gate": True},
        )
        assert r.status_code == 422, r.text
        assert "digits" in r.json()["detail"]
    assert _snapshot(admin, "digits") == before
    r = admin.post("/v2/models/digits/predict/", json=_png_body(5))
    assert r.status_code == 200, r.text
    assert not marker.exists()


def test_a_promoted_pickle_is_refused_at_load_and_never_runs(
    served: Platform, admin: httpx.Client, tmp_path: Path
) -> None:
    marker = tmp_path / "promoted-and-ran"
    promoted_before = admin.get(f"{CATALOG}/digits").json()["promoted"]
    # as if stored before artifacts were checked: straight into the catalog, then promoted
    stored = _store_promoted(served.nats.admin_url, served.data_dir, digits_format_1(marker))
    number = asyncio.run(stored)
    r = admin.post("/v2/models/digits/predict/", json=_png_body(2))
    if r.status_code == 202:
        record = wait_activation(admin, r.json()["activation_id"], timeout=60)
        error = record["error"]
    else:
        assert r.status_code == 422, r.text
        error = " ".join(m for messages in r.json().values() for m in messages)  # DEEPaaS form
    assert "format 1 is a pickle" in error, error
    assert not marker.exists()
    rolled = admin.post(f"{CATALOG}/digits/rollback", json={"to": promoted_before})
    assert rolled.status_code == 200, rolled.text
    retired = admin.post(f"{CATALOG}/digits/versions/{number}/retire", json={"reason": "hostile"})
    assert retired.status_code == 200, retired.text
    r = admin.post("/v2/models/digits/predict/", json=_png_body(2))
    assert r.status_code == 200 and r.json()["version"] == promoted_before, r.text
    assert not marker.exists()


async def _store_promoted(url: str, data_dir: Path, artifact: bytes) -> int:
    bus = await Bus.connect(url, name="test-namespace-writes")
    storage = LocalStorage(data_dir / "storage")  # the platform's own store (local backend)
    try:
        store = CatalogStore(bus, storage)
        version = await store.add_version(
            "digits", artifact, metrics={"accuracy": 1.0}, lineage=Lineage()
        )
        await store.promote("digits", version.version)
        return version.version
    finally:
        await storage.close()
        await bus.close()


def test_the_owner_can_still_do_all_of_it(admin: httpx.Client) -> None:
    trained = load_model_plugin("digits").train_default()
    _upload(admin, "owner.bin", trained.artifact)
    added = admin.post(
        f"{CATALOG}/digits/versions",
        json={"artifact": {"bucket": "artifacts", "key": "owner.bin"}, "metrics": trained.metrics},
    )
    assert added.status_code == 201, added.text
    new = added.json()["version"]["version"]
    assert admin.post(f"{CATALOG}/digits/versions/{new}/promote").json()["state"] == "promoted"
    r = admin.post("/v2/models/digits/predict/", json=_png_body(3))
    assert r.status_code == 200 and r.json()["version"] == new, r.text
    assert r.json()["predictions"]["predictions"][0]["label"] == digits().y[3]
    back = admin.post(f"{CATALOG}/digits/rollback").json()
    assert back["version"] != new and back["state"] == "promoted"
    retired = admin.post(f"{CATALOG}/digits/versions/{new}/retire", json={"reason": "done"})
    assert retired.json()["state"] == "retired"
    done = _trained(admin, admin.post("/v2/models/digits/train/"))
    assert done["result"]["output"]["version"] > new
    assert (
        admin.put(
            f"{CATALOG}/digits", json={"name": "digits", "plugin": "digits", "title": "Digits"}
        ).json()["title"]
        == "Digits"
    )
    assert admin.post(CATALOG, json={"name": "scratch"}).json()["owner"] == "default"
    assert admin.delete(f"{CATALOG}/scratch").status_code == 204


def test_anonymous_metrics_name_no_function(
    served: Platform, admin: httpx.Client, tenant: httpx.Client
) -> None:
    code = {"exec": {"kind": "python:3", "code": "def main(a):\n    return {'ok': 1}\n"}}
    assert tenant.put("/api/v1/namespaces/_/actions/tenant-fn", json=code).status_code == 200
    assert tenant.post("/v1/functions/tenant-fn/invoke", json={}).status_code == 200
    assert admin.post("/v2/models/digits/predict/", json=_png_body(1)).status_code == 200

    def counted() -> bool:
        text = admin.get("/metrics").text
        return 'function="inference"' in text

    wait_for(counted, timeout=20)
    wait_for(lambda: "tenant-fn" in tenant.get("/metrics").text, timeout=20)
    anonymous = httpx.get(f"{served.url}/metrics").text
    assert "deepfaas_invocations_total{" in anonymous  # aggregates are there
    for name in ("function=", "trigger=", "inference", "retrain", "tenant-fn", TENANT):
        assert name not in anonymous, name
    bad_key = httpx.get(f"{served.url}/metrics", auth=("nobody", "wrong")).text
    assert "function=" not in bad_key
    mine = admin.get("/metrics").text
    assert 'function="inference"' in mine and "tenant-fn" not in mine
    theirs = tenant.get("/metrics").text
    assert "tenant-fn" in theirs and 'function="inference"' not in theirs
