"""/v2/models, the DEEPaaS-compatible API, against the real platform: shapes, the argument schemas
in the OpenAPI docs, training by uuid, prediction from JSON, multipart and staged large inputs,
and bad input as clear errors that stop nothing else.

The functions are the built-in `inference` and `retrain` (registered by `deepfaas up`); the model
is the digits plug-in installed in the venv.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from bench.harness import Platform, start_platform, wait_for
from eventbus.server import EmbeddedNats
from tests.models.samples import csv_bytes, digits, npy, png


@pytest.fixture(scope="module")
def served(
    nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """The platform with `digits` published and its first version trained over /v2."""
    platform = start_platform(
        nats_server, Path(tmp_path_factory.mktemp("platform")), builtins="inference,retrain"
    )
    try:
        with platform.client(timeout=90) as client:
            r = client.post("/v1/catalog/publish/digits")
            assert r.status_code == 201, r.text
            started = client.post("/v2/models/digits/train/")
            assert started.status_code == 200, started.text
            done = _training_done(client, started.json())
            assert done["status"] == "done", done
            assert done["result"]["version"] == 1 and done["result"]["promoted"] is True
        yield platform
    finally:
        platform.stop()


@pytest.fixture
def client(served: Platform) -> Iterator[httpx.Client]:
    with served.client(timeout=90) as c:
        yield c


def _training_done(client: httpx.Client, started: dict[str, Any]) -> dict[str, Any]:
    assert started["status"] == "running" and started["uuid"]
    assert started["href"] == f"/v2/models/digits/train/{started['uuid']}"

    def finished() -> dict[str, Any] | None:
        r = client.get(started["href"])
        if r.status_code == 404:
            return None  # not picked up yet
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body if body["status"] != "running" else None

    result: dict[str, Any] = wait_for(finished, timeout=120, interval=0.2)
    return result


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    return body


def test_models_are_listed_in_deepaas_shape(client: httpx.Client, served: Platform) -> None:
    listed = client.get("/v2/models/").json()
    assert [m["id"] for m in listed["models"]] == ["digits"]
    model = listed["models"][0]
    assert model["name"] == "digits" and model["framework"] == "scikit-learn"
    assert {"rel": "self", "href": "/v2/models/digits/"} in model["links"]
    assert httpx.get(f"{served.url}/v2/models").json() == listed  # anonymous, no slash
    one = client.get("/v2/models/digits/").json()
    assert one["id"] == "digits" and one["promoted"] == 1
    assert client.get("/v2/models/digits").status_code == 200


def test_openapi_documents_the_digits_arguments(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/v2/models/digits/predict/"]["post"]["requestBody"]["content"]
    props = predict["application/json"]["schema"]["properties"]
    assert {"data", "format", "filename"} <= set(props)
    assert props["format"]["enum"] == ["auto", "image", "npy", "csv"]
    assert predict["multipart/form-data"]["schema"]["properties"]["data"]["format"] == "binary"
    train = spec["paths"]["/v2/models/digits/train/"]["post"]["requestBody"]["content"]
    assert "holdout" in train["multipart/form-data"]["schema"]["properties"]
    assert "/v2/models/{name}/predict/" in spec["paths"]
    assert "/v2/models/{name}/predict" not in spec["paths"]  # the slashless twin is hidden


def test_unknown_model_is_404_naming_the_known_ones(client: httpx.Client) -> None:
    for r in (
        client.get("/v2/models/nope/"),
        client.post("/v2/models/nope/predict/", files={"data": ("a.png", b"x")}),
        client.post("/v2/models/nope/train/"),
    ):
        assert "digits" in _problem(r, 404)["detail"]


def test_predict_by_json_and_by_multipart_png(client: httpx.Client) -> None:
    data = digits()
    body = {"data": base64.b64encode(png(data.x[3])).decode(), "filename": "three.png"}
    r = client.post("/v2/models/digits/predict/", json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["status"] == "OK" and answer["model"] == "digits" and answer["version"] == 1
    assert answer["predictions"]["predictions"][0]["label"] == data.y[3]
    assert r.headers["x-model-version"] == "1" and r.headers["x-activation-id"]

    r = client.post(
        "/v2/models/digits/predict",
        files={"data": ("seven.png", png(data.x[7], box=(40, 40), canvas=(64, 64)), "image/png")},
        params={"version": 1},
    )
    assert r.status_code == 200, r.text
    assert r.json()["predictions"]["predictions"][0]["label"] == data.y[7]


def test_bad_input_is_a_clear_error_and_stops_nothing(client: httpx.Client) -> None:
    corrupt = b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20
    problem = _problem(
        client.post("/v2/models/digits/predict/", files={"data": ("bad.png", corrupt)}), 422
    )
    assert "image" in problem["detail"], problem
    # the gateway checks the plug-in's arguments before invoking anything
    args = _problem(
        client.post(
            "/v2/models/digits/predict/",
            files={"data": ("x.png", b"x")},
            data={"format": "tiff"},
        ),
        422,
    )
    assert "format" in args["detail"]
    _problem(client.post("/v2/models/digits/predict/", json={}), 422)
    missing = _problem(client.post("/v2/models/digits/predict/?version=9", json=_png_body()), 404)
    assert "no version 9" in missing["detail"]
    r = client.post("/v2/models/digits/predict/", json=_png_body())
    assert r.status_code == 200, r.text


def _png_body() -> dict[str, Any]:
    return {"data": base64.b64encode(png(digits().x[0])).decode(), "filename": "zero.png"}


def test_a_large_input_travels_through_staging(client: httpx.Client) -> None:
    data = digits()
    rows = np.tile(data.x[:100], (30, 1))  # 3000 x 64 float64: about 1.5 MiB
    blob = npy(rows)
    assert len(blob) > 1 << 20
    r = client.post("/v2/models/digits/predict/", files={"data": ("big.npy", blob)})
    assert r.status_code == 200, r.text
    labels = [p["label"] for p in r.json()["predictions"]["predictions"]]
    assert len(labels) == 3000 and labels[:3] == list(data.y[:3])
    staged = client.get("/v1/buckets/deepfaas-staging/objects?prefix=v2/").json()
    keys = [o["key"] for o in staged.get("objects", staged)]
    assert any(k.endswith("/big.npy") for k in keys), staged


def test_train_on_a_csv_and_list_trainings(client: httpx.Client) -> None:
    data = digits()
    r = client.post(
        "/v2/models/digits/train/",
        files={"data": ("labelled.csv", csv_bytes(data.x, data.y), "text/csv")},
        data={"c": "5"},
    )
    assert r.status_code == 200, r.text
    started = r.json()
    assert started["args"] == {"c": "5"}
    done = _training_done(client, started)
    assert done["status"] == "done", done
    assert done["result"]["version"] == 2 and done["result"]["metrics"]["accuracy"] > 0.9
    listed = client.get("/v2/models/digits/train/").json()
    assert started["uuid"] in [t["uuid"] for t in listed]
    bad = _problem(
        client.post(
            "/v2/models/digits/train/",
            data={"holdout": "2"},
            files={"data": ("x.csv", b"label,a\n1,2\n", "text/csv")},
        ),
        422,
    )
    assert "holdout" in bad["detail"]


def test_the_cli_predicts_and_lists_versions(served: Platform, tmp_path: Path) -> None:
    env = {**os.environ, "DEEPFAAS_URL": served.url, "DEEPFAAS_AUTH": served.auth}
    image = tmp_path / "four.png"
    image.write_bytes(png(digits().x[4]))

    def cli(*args: str) -> Any:
        done = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "model", *args, "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    assert [v["version"] for v in cli("versions", "digits")][:1] == [1]
    answer = cli("predict", "digits", str(image))
    assert answer["predictions"]["predictions"][0]["label"] == digits().y[4]
