"""The real DEEPaaS 2.6.0 server beside our `/v2`: every DEEPaaS route, compared field by field.

`deepaas` cannot be installed beside the pinned set (it needs Werkzeug < 3, Flask needs ≥ 3.1),
so the module makes its own venv under a temp dir, installs `deepaas==2.6.0` with pip, and runs
`deepaas-run` with its built-in test model on a free loopback port. Values may differ (models,
ids, dates); keys, types, status codes, status words and date formats may not. Where DEEPaaS
2.6.0 itself misbehaves (DELETE of a running training answers 500; unknown train arguments are
dropped silently) ours is checked alone, as docs/api.md says.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import OpenAPIV2SpecValidator

from eventbus.server import EmbeddedNats, free_port
from tests.models.samples import csv_bytes, digits
from tests.support import Platform, start_platform, wait_for

pytestmark = pytest.mark.timeout(600)

DEEPAAS = "deepaas==2.6.0"
REAL_MODEL = "deepaas-test"  # DEEPaaS's built-in test model
OURS_MODEL = "digits"
DATE = "%Y-%m-%d %H:%M:%S.%f"
DURATION = re.compile(r"^\d+:\d\d:\d\d(\.\d{6})?$")
#: what pip prints when it cannot reach the index (then the module skips, saying so)
UNREACHABLE = ("Could not find a version", "No matching distribution", "Max retries", "resolve")
#: values a model chooses (its arguments, its training output): compared as dicts, not deeper
MODEL_SPECIFIC = frozenset({"args", "output"})


@dataclass(frozen=True)
class Side:
    """One server under comparison: its base URL, its model, and how to call it."""

    url: str
    model: str
    auth: tuple[str, str] | None = None

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=90, auth=self.auth)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def same_shape(real: Any, ours: Any, where: str = "$", *, extra_keys: bool = False) -> None:
    """``ours`` has ``real``'s shape: same keys (or more, with ``extra_keys``), same types.

    A DEEPaaS `null` is a value its test model leaves empty: ours may hold anything there.
    """
    if real is None:
        return
    assert _kind(real) == _kind(ours), f"{where}: DEEPaaS has {real!r}, we have {ours!r}"
    if isinstance(real, dict):
        missing = set(real) - set(ours)
        assert not missing, f"{where}: we lack {sorted(missing)} (DEEPaaS: {real}, ours: {ours})"
        if not extra_keys:
            added = set(ours) - set(real)
            assert not added, f"{where}: we add {sorted(added)} (DEEPaaS: {real}, ours: {ours})"
        for key, value in real.items():
            if key not in MODEL_SPECIFIC:
                same_shape(value, ours[key], f"{where}.{key}", extra_keys=extra_keys)
    elif isinstance(real, list) and real and ours:
        same_shape(real[0], ours[0], f"{where}[0]", extra_keys=extra_keys)


def same_error(real: httpx.Response, ours: httpx.Response) -> None:
    """The same status, media type and body form (422: field -> messages; else a message)."""
    assert ours.status_code == real.status_code, (real.text, ours.text)
    kind = real.headers["content-type"].split(";")[0]
    assert ours.headers["content-type"].split(";")[0] == kind, (kind, ours.headers)
    if kind == "application/json":
        for body in (real.json(), ours.json()):
            assert body and all(
                isinstance(v, list) and all(isinstance(m, str) for m in v) for v in body.values()
            ), body
    else:
        phrase = real.text.splitlines()[0]
        assert phrase.startswith(f"{real.status_code}: ")
        assert ours.text.splitlines()[0] == phrase, (phrase, ours.text)


def _install(venv: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    done = subprocess.run(
        [*pip, "--disable-pip-version-check", DEEPAAS],
        capture_output=True,
        text=True,
        timeout=480,
    )
    if done.returncode != 0:
        said = done.stdout + done.stderr
        if any(marker in said for marker in UNREACHABLE):
            pytest.skip(f"pip cannot reach {DEEPAAS}: {said.strip().splitlines()[-1]}")
        pytest.fail(f"pip install {DEEPAAS} failed:\n{said[-3000:]}")


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Side]:
    """`deepaas-run` with its test model, in its own venv, on a free loopback port."""
    here = tmp_path_factory.mktemp("deepaas")
    _install(here / "venv")
    port = free_port()
    log = (here / "deepaas.log").open("wb")
    run = str(here / "venv" / "bin" / "deepaas-run")
    process = subprocess.Popen(
        [run, "--listen-ip", "127.0.0.1", "--listen-port", str(port)],
        cwd=here,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert process.poll() is None, (here / "deepaas.log").read_text(errors="replace")
        try:
            return httpx.get(f"{url}/v2/", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, timeout=60, interval=0.2)
        yield Side(url, REAL_MODEL)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


@pytest.fixture(scope="module")
def ours(nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Side]:
    """Our platform with `digits` published and trained once."""
    platform: Platform = start_platform(
        nats_server, Path(tmp_path_factory.mktemp("platform")), builtins="inference,retrain"
    )
    try:
        side = Side(platform.url, OURS_MODEL, platform.basic_auth)
        with side.client() as client:
            assert client.post(f"/v1/catalog/publish/{OURS_MODEL}").status_code == 201
            started = client.post(f"/v2/models/{OURS_MODEL}/train/")
            assert started.status_code == 200, started.text
            finished(side, started.json()["uuid"])
        yield side
    finally:
        platform.stop()


def finished(side: Side, uuid: str) -> dict[str, Any]:
    """A training's record once it is no longer running."""

    def done() -> dict[str, Any] | None:
        with side.client() as client:
            r = client.get(f"/v2/models/{side.model}/train/{uuid}")
        if r.status_code == 404:
            return None  # not picked up yet
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body if body["status"] != "running" else None

    record: dict[str, Any] = wait_for(done, timeout=120, interval=0.2)
    return record


def get_both(real: Side, ours: Side, path: str) -> tuple[httpx.Response, httpx.Response]:
    """The same GET against both, with each side's model in ``{model}``."""
    with real.client() as a, ours.client() as b:
        return a.get(path.format(model=real.model)), b.get(path.format(model=ours.model))


@pytest.mark.parametrize("path", ["/", "/v2/"])
def test_version_documents(real: Side, ours: Side, path: str) -> None:
    a, b = get_both(real, ours, path)
    assert a.status_code == b.status_code == 200
    same_shape(a.json(), b.json())
    assert b.json() == a.json()  # no value here is ours to choose


@pytest.mark.parametrize("path", ["/v2/models/", "/v2/models/{model}/"])
def test_model_entries(real: Side, ours: Side, path: str) -> None:
    a, b = get_both(real, ours, path)
    assert a.status_code == b.status_code == 200
    same_shape(a.json(), b.json(), extra_keys=True)  # our entries carry more of the catalog


def test_swagger_json(real: Side, ours: Side) -> None:
    a, b = get_both(real, ours, "/swagger.json")
    assert a.status_code == b.status_code == 200
    theirs, mine = a.json(), b.json()
    assert set(mine) == set(theirs) and mine["swagger"] == theirs["swagger"] == "2.0"
    assert set(mine["info"]) == set(theirs["info"])
    # a valid Swagger 2.0 document (DEEPaaS 2.6.0's own is not quite: its train POST has no
    # responses)
    OpenAPIV2SpecValidator(mine).validate()
    for path, item in theirs["paths"].items():
        if path.startswith("/v2/debug"):
            continue  # DEEPaaS's debug route: not one its clients use
        # a route of one model: ours documents it for the model, or for any `{name}`
        twins = (path.replace(real.model, ours.model), path.replace(real.model, "{name}"))
        for method, op in item.items():
            found = [t for t in twins if method in mine["paths"].get(t, {})]
            assert found, f"no {method.upper()} {twins[0]} in our /swagger.json"
            our_op = mine["paths"][found[0]][method]
            assert set(op) - {"description"} <= set(our_op), (path, method, op, our_op)
            for param in op["parameters"] + our_op["parameters"]:
                assert {"in", "name", "required"} <= set(param), param
                assert "type" in param or "schema" in param, param
    upload = mine["paths"][f"/v2/models/{ours.model}/predict/"]["post"]["parameters"]
    assert {"in": "formData", "name": "data", "type": "file"}.items() <= next(
        p for p in upload if p["name"] == "data"
    ).items()


def test_api_page(real: Side, ours: Side) -> None:
    a, b = get_both(real, ours, "/api")
    assert a.status_code == b.status_code == 200
    assert a.headers["content-type"].startswith("text/html")
    assert b.headers["content-type"].startswith("text/html")
    for page in (a.text, b.text):
        assert "swagger-ui" in page and "/swagger.json" in page
    assert not re.search(r"""(src|href)=["']https?://""", b.text)  # nothing from outside


def test_training_lifecycle(real: Side, ours: Side) -> None:
    data = digits()
    with real.client() as a, ours.client() as b:
        started = (
            a.post(f"/v2/models/{real.model}/train/", params={"sleep": 1}),
            b.post(
                f"/v2/models/{ours.model}/train/",
                params={"c": "5"},
                files={"data": ("l.csv", csv_bytes(data.x[:300], data.y[:300]), "text/csv")},
            ),
        )
        for r in started:
            assert r.status_code == 200, r.text
        posted = [r.json() for r in started]
        same_shape(posted[0], posted[1])
        assert posted[0]["status"] == posted[1]["status"] == "running"
        records = [finished(side, p["uuid"]) for side, p in zip((real, ours), posted, strict=True)]
        same_shape(records[0], records[1])
        for post, record in zip(posted, records, strict=True):
            assert record["status"] == "done", record
            assert record["date"] == post["date"]  # the same date in POST and GET
            for when in (record["date"], record["result"]["finish_date"]):
                datetime.strptime(when, DATE)
            assert DURATION.match(record["result"]["duration"]), record
        lists = [a.get(f"/v2/models/{real.model}/train/"), b.get(f"/v2/models/{ours.model}/train/")]
        for r, post in zip(lists, posted, strict=True):
            assert r.status_code == 200 and isinstance(r.json(), list)
            assert post["uuid"] in [t["uuid"] for t in r.json()]
        same_shape(lists[0].json(), lists[1].json())
        # DELETE of a finished training answers it unchanged
        deleted = [
            a.delete(f"/v2/models/{real.model}/train/{posted[0]['uuid']}"),
            b.delete(f"/v2/models/{ours.model}/train/{posted[1]['uuid']}"),
        ]
        for r, record in zip(deleted, records, strict=True):
            assert r.status_code == 200 and r.json() == record


def test_errors_as_deepaas_answers_them(real: Side, ours: Side) -> None:
    with real.client() as a, ours.client() as b:
        for path in ("/v2/models/nope/", "/v2/models/{model}/train/" + "0" * 32):
            same_error(a.get(path.format(model=real.model)), b.get(path.format(model=ours.model)))
        same_error(
            a.delete(f"/v2/models/{real.model}/train/{'0' * 32}"),
            b.delete(f"/v2/models/{ours.model}/train/{'0' * 32}"),
        )
        same_error(a.post("/v2/models/nope/train/"), b.post("/v2/models/nope/train/"))
        # an argument of the wrong type
        same_error(
            a.post(f"/v2/models/{real.model}/train/", params={"sleep": "x"}),
            b.post(
                f"/v2/models/{ours.model}/train/",
                params={"holdout": "x"},
                files={"data": ("x.csv", b"label,a\n1,2\n", "text/csv")},
            ),
        )
        # no input to predict on
        same_error(
            a.post(f"/v2/models/{real.model}/predict/", params={"parameter": 1}),
            b.post(f"/v2/models/{ours.model}/predict/"),
        )
        # unknown train arguments: DEEPaaS 2.6 drops them silently; we refuse them, in its form
        unknown = b.post(f"/v2/models/{ours.model}/train/", params={"bogus": "1"})
        assert unknown.status_code == 422 and unknown.json() == {"bogus": ["Unknown field."]}
