"""/v2/models, the DEEPaaS-compatible API, against the real platform: shapes, the argument schemas
in the OpenAPI docs, training by uuid, prediction from JSON, multipart and staged large inputs,
and bad input as clear errors that stop nothing else.

The functions are the built-in `inference` and `retrain` (registered by `deepfaas up`); the model
is the digits plug-in installed in the venv.
"""

from __future__ import annotations

import asyncio
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

from eventbus.connection import Bus
from eventbus.namespaces import DEFAULT_NAMESPACE, qualify
from eventbus.server import EmbeddedNats
from runtimes.activations import ActivationStore, new_activation_id, now
from runtimes.types import ActivationRecord, ActivationStatus
from tests.models.samples import csv_bytes, digits, npy, png
from tests.support import Platform, start_platform, wait_for


@pytest.fixture(scope="module")
def served(
    nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """The platform with `digits` published and its first version trained over /v2."""
    platform = start_platform(
        nats_server,
        Path(tmp_path_factory.mktemp("platform")),
        builtins="inference,retrain",
        anonymous_predict="digits",  # open to anonymous predictions, rate-limited
        anonymous_predict_rate_per_s=0.2,
        anonymous_predict_burst=2,
    )
    try:
        with platform.client(timeout=90) as client:
            r = client.post("/v1/catalog/publish/digits")
            assert r.status_code == 201, r.text
            started = client.post("/v2/models/digits/train/")
            assert started.status_code == 200, started.text
            done = _training_done(client, started.json())
            assert done["status"] == "done", done
            output = done["result"]["output"]
            assert output["version"] == 1 and output["promoted"] is True
        yield platform
    finally:
        platform.stop()


@pytest.fixture
def client(served: Platform) -> Iterator[httpx.Client]:
    with served.client(timeout=90) as c:
        yield c


def _training_done(client: httpx.Client, started: dict[str, Any]) -> dict[str, Any]:
    assert started["status"] == "running" and started["uuid"]
    assert set(started) == {"date", "args", "uuid", "status"}  # as DEEPaaS 2.6 answers

    def finished() -> dict[str, Any] | None:
        r = client.get(f"/v2/models/digits/train/{started['uuid']}")
        if r.status_code == 404:
            return None  # not picked up yet
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body if body["status"] != "running" else None

    result: dict[str, Any] = wait_for(finished, timeout=120, interval=0.2)
    assert result["date"] == started["date"]  # the same date in POST and GET
    assert set(result["result"]) == {"output", "finish_date", "duration"}
    return result


def _invalid(response: httpx.Response) -> dict[str, list[str]]:
    """A DEEPaaS 422: `{"field": ["message", ...]}`."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, list[str]] = response.json()
    assert body and all(isinstance(v, list) and v for v in body.values()), body
    return body


def _message(response: httpx.Response, status: int) -> str:
    """A DEEPaaS error other than 422: `<code>: <phrase>`, then our reason."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.startswith(f"{status}: ")
    return response.text


def test_models_are_listed_in_deepaas_shape(client: httpx.Client, served: Platform) -> None:
    listed = client.get("/v2/models/").json()
    assert [m["id"] for m in listed["models"]] == ["digits"]
    model = listed["models"][0]
    assert model["name"] == "digits" and model["framework"] == "scikit-learn"
    assert model["version"] == "1" and isinstance(model["url"], str)
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
        assert "digits" in _message(r, 404)


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


def test_predict_by_a_raw_image_body(client: httpx.Client) -> None:
    data = digits()
    r = client.post(
        "/v2/models/digits/predict/",
        content=png(data.x[5]),
        headers={"content-type": "image/png", "content-disposition": 'inline; filename="5.png"'},
    )
    assert r.status_code == 200, r.text
    assert r.json()["predictions"]["predictions"][0]["label"] == data.y[5]


def test_bad_input_is_a_clear_error_and_stops_nothing(client: httpx.Client) -> None:
    corrupt = b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20
    problem = _invalid(
        client.post("/v2/models/digits/predict/", files={"data": ("bad.png", corrupt)})
    )
    assert "image" in json.dumps(problem), problem
    # the gateway checks the plug-in's arguments before invoking anything
    args = _invalid(
        client.post(
            "/v2/models/digits/predict/",
            files={"data": ("x.png", b"x")},
            data={"format": "tiff"},
        )
    )
    assert "format" in args
    assert "data" in _invalid(client.post("/v2/models/digits/predict/", json={}))
    missing = _message(client.post("/v2/models/digits/predict/?version=9", json=_png_body()), 404)
    assert "no version 9" in missing
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
        params={"c": "5"},  # as DEEPaaS clients send arguments: in the query
    )
    assert r.status_code == 200, r.text
    started = r.json()
    assert started["args"] == {"c": "5"}
    done = _training_done(client, started)
    assert done["status"] == "done", done
    output = done["result"]["output"]
    assert output["version"] == 2 and output["metrics"]["accuracy"] > 0.9
    listed = client.get("/v2/models/digits/train/").json()
    assert started["uuid"] in [t["uuid"] for t in listed]
    bad = _invalid(
        client.post(
            "/v2/models/digits/train/",
            data={"holdout": "2"},
            files={"data": ("x.csv", b"label,a\n1,2\n", "text/csv")},
        )
    )
    assert "holdout" in bad
    # an argument the model does not take is refused, not passed on as a string
    assert _invalid(client.post("/v2/models/digits/train/?bogus=1")) == {
        "bogus": ["Unknown field."]
    }


def test_the_cli_predicts_and_lists_versions(served: Platform, tmp_path: Path) -> None:
    env = {**os.environ, "DEEPFAAS_URL": served.url, "DEEPFAAS_AUTH": served.auth}
    image = tmp_path / "four.png"
    image.write_bytes(png(digits().x[4]))

    def cli(*args: str) -> Any:
        done = subprocess.run(
            [sys.executable, "-m", "cli", "model", *args, "--json"],
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


async def _a_running_training(served: Platform) -> str:
    """A training a worker holds, written as the worker writes it (a real run ends too soon)."""
    bus = await Bus.connect(served.nats.admin_url, name="test-cancel-training")
    try:
        running = ActivationRecord(
            id=new_activation_id(),
            function=qualify(DEFAULT_NAMESPACE, "retrain"),
            version=1,
            status=ActivationStatus.RUNNING,
            mode="async",
            start=now(),
            annotations={"model": "digits", "train_args": {"c": "3"}},
        )
        await ActivationStore(bus).put(running)
    finally:
        await bus.close()
    return running.id


def test_delete_cancels_a_running_training_and_leaves_a_finished_one(
    client: httpx.Client, served: Platform
) -> None:
    uuid = asyncio.run(_a_running_training(served))
    url = f"/v2/models/digits/train/{uuid}"
    r = client.delete(url)
    assert r.status_code == 200, r.text
    cancelled = r.json()
    assert cancelled["status"] == "cancelled" and "cancelled by" in cancelled["message"]
    assert set(cancelled["result"]) == {"output", "finish_date", "duration"}
    assert client.get(url).json() == cancelled  # it stays cancelled
    assert client.delete(url).json() == cancelled  # a second DELETE changes nothing

    done = next(t for t in client.get("/v2/models/digits/train/").json() if t["status"] == "done")
    r = client.delete(f"/v2/models/digits/train/{done['uuid']}")
    assert r.status_code == 200 and r.json() == done  # finished: answered as it is
    _message(client.delete(f"/v2/models/digits/train/{'0' * 32}"), 404)
    _message(client.delete("/v2/models/digits/train/not an id"), 404)


def test_anonymous_predictions_of_an_open_model_are_rate_limited(served: Platform) -> None:
    with httpx.Client(base_url=served.url, timeout=90) as anonymous:
        first = anonymous.post("/v2/models/digits/predict/", json=_png_body())
        assert first.status_code == 200, first.text
        assert first.json()["predictions"]["predictions"][0]["label"] == digits().y[0]
        statuses = [
            anonymous.post("/v2/models/digits/predict/", json=_png_body()).status_code
            for _ in range(3)
        ]
        assert 429 in statuses, statuses
        limited = anonymous.post("/v2/models/digits/predict/", json=_png_body())
        _message(limited, 429)
        assert int(limited.headers["retry-after"]) >= 1
        # only predict is open: training still needs a key
        assert anonymous.post("/v2/models/digits/train/").status_code == 401


def test_delete_during_a_real_training(client: httpx.Client) -> None:
    started = client.post("/v2/models/digits/train/").json()
    url = f"/v2/models/digits/train/{started['uuid']}"

    def picked_up() -> dict[str, Any] | None:
        r = client.get(url)
        return r.json() if r.status_code == 200 else None

    wait_for(picked_up, timeout=60, interval=0.05)
    r = client.delete(url)
    assert r.status_code == 200, r.text
    ended = r.json()
    # caught running (a default training takes seconds), or it had just finished
    assert ended["status"] in ("cancelled", "done"), ended
    assert ended["date"] == started["date"]
    if ended["status"] == "cancelled":
        assert client.get(url).json()["status"] == "cancelled"
