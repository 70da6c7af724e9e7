"""Models by events alone: publish → first version → upload labelled data → retrain → gate →
promotion → inference switches version, with no one touching a server.

The real platform (`deepfaas up`: nats-server, controller, dispatcher, workers, gateway, local
storage); the functions are the built-in `inference` and `retrain`, registered by `deepfaas up`;
the model is the digits plug-in installed in the venv; the data ship with scikit-learn.
"""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from eventbus.server import EmbeddedNats
from tests.models.samples import csv_bytes, digits, png
from tests.support import Platform, start_platform, wait_for

PREFIX = "io.deepfaas"


def module(client: httpx.Client, name: str = "digits") -> dict[str, Any]:
    r = client.get(f"/v1/catalog/modules/{name}")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def promoted_is(client: httpx.Client, version: int) -> bool:
    return module(client).get("promoted") == version


def classify(client: httpx.Client, key: str, row: np.ndarray) -> dict[str, Any]:
    """Upload one digit as a PNG; wait for its output object; return it and its activation."""
    r = client.put(
        f"/v1/buckets/digits-in/objects/{key}",
        content=png(row, box=(56, 56), canvas=(80, 80)),
        headers={"content-type": "image/png"},
    )
    assert r.status_code == 201, r.text
    out = wait_for(
        lambda: (
            resp
            if (resp := client.get(f"/v1/buckets/digits-out/objects/{key}.json")).status_code == 200
            else None
        ),
        timeout=60,
    )
    answer: dict[str, Any] = orjson.loads(out.content)
    records = [
        a
        for a in client.get("/v1/activations?function=inference&limit=200").json()
        if a.get("output") and a["output"]["key"] == f"{key}.json"
    ]
    assert len(records) == 1, records
    answer["record"] = client.get(f"/v1/activations/{records[0]['id']}").json()
    return answer


@pytest.fixture(scope="module")
def loop(nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory) -> Any:
    platform = start_platform(
        nats_server, tmp_path_factory.mktemp("platform"), builtins="inference,retrain"
    )
    try:
        yield from _prepared(platform)
    finally:
        platform.stop()


def _prepared(platform: Platform) -> Any:
    with platform.client(timeout=60) as client:
        registered = {f["name"] for f in client.get("/v1/functions").json()}
        assert {"inference", "retrain"} <= registered  # `deepfaas up` registered them
        for bucket in ("digits-in", "digits-out", "digits-train"):
            assert client.put(f"/v1/buckets/{bucket}").status_code in (200, 201)
        triggers = [
            {
                "name": "digits-first-version",
                "function": "retrain",
                "filters": [{"exact": {"type": f"{PREFIX}.catalog.module.published"}}],
                "params": {"default": True},
            },
            {
                "name": "digits-retrain",
                "function": "retrain",
                "bucket": "digits-train",
                "key_suffix": ".csv",
                "params": {"model": "digits"},
            },
            {
                "name": "digits-classify",
                "function": "inference",
                "bucket": "digits-in",
                "params": {"model": "digits"},
                "output": {"bucket": "digits-out", "key_template": "{key}.json"},
            },
        ]
        for trigger in triggers:
            r = client.post("/v1/triggers", json=trigger)
            assert r.status_code == 201, r.text
        r = client.post(
            "/v1/catalog/modules",
            json={"name": "digits", "description": "handwritten digits", "tolerance": 0.02},
        )
        assert r.status_code == 201, r.text
        wait_for(lambda: promoted_is(client, 1), timeout=90)
        yield client


def test_upload_labelled_data_promotes_a_version_inference_then_uses(loop: httpx.Client) -> None:
    data = digits()
    client = loop
    first = classify(client, "before/one.png", data.x[1])
    assert first["version"] == 1 and first["model"] == "digits"
    assert first["record"]["annotations"]["model_version"] == 1
    assert first["result"]["predictions"][0]["label"] == data.y[1]
    worker = first["record"]["worker"]

    r = client.put(
        "/v1/buckets/digits-train/objects/batch-1/labelled.csv",
        content=csv_bytes(data.x, data.y),
        headers={"content-type": "text/csv"},
    )
    assert r.status_code == 201, r.text
    wait_for(lambda: promoted_is(client, 2), timeout=120)
    v2 = client.get("/v1/catalog/modules/digits/versions/2").json()
    assert v2["state"] == "promoted" and v2["metrics"]["accuracy"] > 0.95
    assert v2["lineage"]["parent"] == 1
    assert v2["lineage"]["data"]["source"] == "digits-train/batch-1/labelled.csv"

    second = classify(client, "after/seven.png", data.x[7])
    assert second["version"] == 2
    assert second["record"]["annotations"]["model_version"] == 2
    assert second["result"]["predictions"][0]["label"] == data.y[7]
    # the same warm worker switched versions: nothing was restarted
    assert second["record"]["worker"] == worker


def test_shuffled_labels_make_a_candidate_the_gate_refuses(loop: httpx.Client) -> None:
    data = digits()
    client = loop
    before = module(client)["promoted"]
    labels = np.random.default_rng(7).permutation(data.y)
    r = client.put(
        "/v1/buckets/digits-train/objects/batch-2/shuffled.csv",
        content=csv_bytes(data.x, labels),
        headers={"content-type": "text/csv"},
    )
    assert r.status_code == 201, r.text

    def refused() -> dict[str, Any] | None:
        versions = client.get("/v1/catalog/modules/digits/versions").json()
        fresh = [
            v for v in versions if v["lineage"]["data"].get("source", "").endswith("shuffled.csv")
        ]
        # a version is stored first, then gated: wait for the gate's decision (its reason)
        return fresh[0] if fresh and fresh[0]["reason"] else None

    candidate = wait_for(refused, timeout=120)
    assert candidate["state"] == "candidate"
    assert candidate["metrics"]["accuracy"] < 0.5
    assert "kept as a candidate" in candidate["reason"]
    assert module(client)["promoted"] == before
    answer = classify(client, "after-shuffle/three.png", data.x[3])
    assert answer["version"] == before
