"""The OpenAPI description as the server answers: every error status and body an operation can get.

FastAPI lists what a route declares; the gateway answers more in one place for every route
(authentication, quotas, body limits, malformed bodies, validation, a missing object named by
the path, a busy bus). This adds those answers to each operation, with the body each API family
writes: RFC 9457 problems on `/v1`, OpenWhisk's `{error, code}` on `/api/v1` (where a validation
error is 400), DEEPaaS's field errors or plain text on `/v2` (auth and routing stay problems).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import orjson
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from gateway.auth.policy import PUBLIC_PATHS
from gateway.params import BUCKET_NAME_SCHEMA, EVENT_FILTER_SCHEMA
from gateway.problems import TITLES

PROBLEM: Final = {
    "type": "object",
    "description": "RFC 9457 problem details (further members name the object or field)",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "each failing field of a validation error",
            "items": {"type": "object"},
        },
    },
}
OPENWHISK_ERROR: Final = {
    "type": "object",
    "description": "OpenWhisk's error body (`code` is the request id)",
    "required": ["error", "code"],
    "properties": {"error": {"type": "string"}, "code": {"type": "string"}},
}
FIELD_ERRORS: Final = {
    "type": "object",
    "description": "DEEPaaS's validation errors: field name -> messages",
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
}
_PROBLEM_REF: Final = {"$ref": "#/components/schemas/Problem"}
_WRITES: Final = frozenset({"post", "put", "patch", "delete"})
#: path parameters whose routes check them in the handler: the rule they check, by name
PATH_PARAMETERS: Final = {"bucket": BUCKET_NAME_SCHEMA}


def error_content(path: str) -> dict[str, Any]:
    """The media types an error of ``path`` comes in."""
    problem = {"application/problem+json": {"schema": _PROBLEM_REF}}
    if path.startswith("/api/v1/"):
        return {"application/json": {"schema": {"$ref": "#/components/schemas/OpenWhiskError"}}}
    if path.startswith(("/system/", "/run/", "/job/")):  # OSCAR's plain text (auth: problems)
        return {"text/plain": {"schema": {"type": "string"}}, **problem}
    if path.startswith("/v2/"):
        return {
            "application/json": {"schema": {"$ref": "#/components/schemas/FieldErrors"}},
            "text/plain": {"schema": {"type": "string"}},
            **problem,
        }
    return problem


def error_statuses(path: str, method: str, operation: dict[str, Any]) -> set[int]:
    """The error statuses the gateway itself may answer for one operation."""
    statuses = {503}
    if path not in PUBLIC_PATHS:
        statuses |= {401, 403, 429}
    if operation.get("parameters") or "requestBody" in operation:
        statuses.add(422)
    if "{" in path:
        statuses.add(404)
    if "requestBody" in operation:
        statuses |= {400, 413}
    if method in _WRITES and path not in PUBLIC_PATHS:
        statuses.add(409)
    if path.startswith("/api/v1/") and 422 in statuses:
        statuses.remove(422)  # OpenWhisk answers a bad value with 400
        statuses.add(400)
    return statuses


def document_errors(spec: dict[str, Any]) -> dict[str, Any]:
    """Add the gateway's own error answers to every operation of ``spec`` (in place)."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(
        Problem=PROBLEM,
        OpenWhiskError=OPENWHISK_ERROR,
        FieldErrors=FIELD_ERRORS,
        EventFilter=EVENT_FILTER_SCHEMA,
    )
    for path, item in spec.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for parameter in operation.get("parameters", []):
                rule = PATH_PARAMETERS.get(parameter.get("name", ""))
                if parameter.get("in") == "path" and rule is not None:
                    parameter["schema"] = {**rule, **parameter.get("schema", {}), **rule}
            responses = operation["responses"]
            declared = {int(s) for s in responses if s.isdigit() and int(s) >= 400}
            for status in sorted(error_statuses(path, method, operation) | declared):
                entry = responses.setdefault(str(status), {})
                entry.setdefault("description", TITLES.get(status, "Error"))
                content = entry.get("content")
                if not content or _is_fastapi_default(content):
                    entry["content"] = error_content(path)
            if path.startswith("/api/v1/"):
                responses.pop("422", None)
    if "/HTTPValidationError" not in orjson.dumps(spec.get("paths", {})).decode():
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
    return spec


def _is_fastapi_default(content: dict[str, Any]) -> bool:
    schema = content.get("application/json", {}).get("schema", {})
    return len(content) == 1 and schema.get("$ref", "").endswith("/HTTPValidationError")


def create_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """`app.openapi`: FastAPI's description with the errors added, built once."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    openapi_version=app.openapi_version,
                    summary=app.summary,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    return openapi
