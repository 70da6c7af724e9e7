"""DEEPaaS pieces without a server: the Swagger 2.0 conversion, error forms, dates, policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from fastapi.exceptions import RequestValidationError

from eventbus.errors import NotFoundError, ValidationFailedError
from gateway.auth.policy import is_anonymous, predicted_model
from gateway.deepaas.errors import render
from gateway.deepaas.swagger2 import schema, swagger2
from gateway.deepaas.train import DATE_FORMAT, started_at, training_of
from runtimes.activations import new_activation_id
from runtimes.types import ActivationRecord, ActivationStatus

OPENAPI = {
    "openapi": "3.1.0",
    "info": {"title": "t", "version": "1", "summary": "s"},
    "paths": {
        "/v2/models/m/predict/": {
            "post": {
                "tags": ["models", "models"],
                "parameters": [
                    {
                        "in": "query",
                        "name": "version",
                        "required": False,
                        "schema": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]},
                    }
                ],
                "requestBody": {
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["data"],
                                "properties": {
                                    "data": {"type": "string", "format": "binary"},
                                    "format": {"type": "string", "enum": ["auto", "csv"]},
                                },
                            }
                        }
                    }
                },
                "responses": {
                    "200": {
                        "description": "ok",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/A"}}
                        },
                    }
                },
            }
        },
        "/v1/functions": {"get": {"responses": {"200": {"description": "not DEEPaaS's"}}}},
    },
    "components": {
        "schemas": {
            "A": {"type": "object", "properties": {"b": {"$ref": "#/components/schemas/B"}}},
            "B": {"type": "object", "properties": {"n": {"type": ["string", "null"]}}},
            "Unused": {"type": "object"},
        }
    },
}


def test_swagger2_keeps_deepaas_paths_as_form_and_query_parameters() -> None:
    doc = swagger2(OPENAPI, wanted=("/", "/v2"), docs_url="http://h/docs")
    assert doc["swagger"] == "2.0" and list(doc["paths"]) == ["/v2/models/m/predict/"]
    op = doc["paths"]["/v2/models/m/predict/"]["post"]
    params = {p["name"]: p for p in op["parameters"]}
    assert params["version"] == {"in": "query", "name": "version", "required": False} | {
        "type": "integer",
        "minimum": 1,
    }
    assert params["data"] == {"in": "formData", "name": "data", "required": True, "type": "file"}
    assert params["format"]["enum"] == ["auto", "csv"] and params["format"]["in"] == "formData"
    assert op["consumes"] == ["multipart/form-data"] and op["tags"] == ["models"]
    assert op["responses"]["200"]["schema"] == {"$ref": "#/definitions/A"}
    assert set(doc["definitions"]) == {"A", "B"}  # what the paths use, transitively
    assert doc["definitions"]["B"]["properties"]["n"] == {"type": "string"}


def test_schema_keeps_unions_it_cannot_say_as_extensions() -> None:
    union = {"anyOf": [{"type": "string"}, {"type": "integer"}], "description": "d"}
    assert schema(union) == {
        "description": "d",
        "x-anyOf": [{"type": "string"}, {"type": "integer"}],
    }
    assert schema({"type": "number", "exclusiveMinimum": 0}) == {
        "type": "number",
        "minimum": 0,
        "exclusiveMinimum": True,
    }


def test_errors_in_deepaas_form() -> None:
    invalid = render(
        RequestValidationError([{"loc": ("query", "sleep"), "msg": "Not a valid integer."}])
    )
    assert invalid.status_code == 422 and invalid.media_type == "application/json"
    assert orjson.loads(invalid.body) == {"sleep": ["Not a valid integer."]}
    listed = render(ValidationFailedError("x", errors=[{"loc": ["format"], "msg": "bad"}]))
    assert orjson.loads(listed.body) == {"format": ["bad"]}
    unnamed = render(ValidationFailedError("no field"))
    assert orjson.loads(unnamed.body) == {"_schema": ["no field"]}
    missing = render(NotFoundError("no model 'x'"))
    assert missing.status_code == 404 and (missing.media_type or "").startswith("text/plain")
    assert bytes(missing.body).decode() == "404: Not Found\nno model 'x'"


def test_a_training_has_one_date_and_deepaas_formats() -> None:
    uuid = new_activation_id()
    begun = started_at(uuid)
    assert abs(begun - datetime.now(UTC)) < timedelta(seconds=5)
    record = ActivationRecord(
        id=uuid,
        function="retrain",
        version=1,
        status=ActivationStatus.SUCCESS,
        mode="async",
        start=begun + timedelta(milliseconds=5),
        end=begun + timedelta(seconds=3, microseconds=4360),
        result={"version": 2, "state": "promoted", "artifact": "not shown"},
        annotations={"model": "m", "train_args": {"c": "5"}},
    )
    body = training_of(record).body()
    assert set(body) == {"date", "args", "uuid", "status", "result"}
    assert body["status"] == "done" and body["args"] == {"c": "5"}
    assert datetime.strptime(body["date"], DATE_FORMAT).replace(tzinfo=UTC) == begun
    assert body["result"] == {
        "output": {"version": 2, "state": "promoted"},
        "finish_date": (begun + timedelta(seconds=3, microseconds=4360)).strftime(DATE_FORMAT),
        "duration": "0:00:03.004360",
    }
    running = training_of(record.model_copy(update={"status": ActivationStatus.RUNNING})).body()
    assert set(running) == {"date", "args", "uuid", "status"} and running["date"] == body["date"]
    cancelled = record.model_copy(
        update={
            "status": ActivationStatus.ERROR,
            "error": "cancelled by x",
            "error_detail": {"cancelled": True},
        }
    )
    assert training_of(cancelled).body()["status"] == "cancelled"
    assert training_of(cancelled).body()["message"] == "cancelled by x"


def test_deepaas_entry_points_are_public_and_predict_is_recognised() -> None:
    for path in ("/", "/v2/", "/swagger.json", "/api", "/static/swagger-ui/swagger-ui.css"):
        assert is_anonymous("GET", path), path
    assert not is_anonymous("POST", "/v2/models/digits/predict/")
    assert predicted_model("POST", "/v2/models/digits/predict/") == "digits"
    assert predicted_model("POST", "/v2/models/digits/predict") == "digits"
    assert predicted_model("GET", "/v2/models/digits/predict/") is None
    assert predicted_model("POST", "/v2/models/digits/train/") is None
