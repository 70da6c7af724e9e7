"""RFC 9457 problem responses, and the one table from error codes to HTTP statuses."""

from __future__ import annotations

import logging
from typing import Any, Final

import nats.errors
import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from eventbus.errors import DeepfaasError
from eventbus.failover import RETRY_AFTER_S

log = logging.getLogger(__name__)

PROBLEM_TYPE_BASE = "https://deepfaas.dev/problems/"

#: error code -> HTTP status; everything the gateway answers for our errors goes through here
STATUS_BY_CODE: dict[str, int] = {
    "not_found": 404,
    "conflict": 409,
    "invalid": 422,
    "invalid_event": 400,
    "bad_request": 400,
    "too_large": 413,
    "function_load": 422,
    "unavailable": 503,
    "bus": 503,
    "provider": 502,
    "provisioning_failed": 502,
    "placement_failed": 502,
    "no_capacity": 503,
    "credentials": 502,
    "internal": 500,
    "storage": 500,
    "unsupported": 501,
    "unauthorized": 401,
    "forbidden": 403,
    "too_many_requests": 429,
}

TITLES: dict[int, str] = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    416: "Range not satisfiable",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal error",
    501: "Not implemented",
    502: "Function failed",
    503: "Service unavailable",
    504: "Function timed out",
}


def problem(status: int, detail: str, *, kind: str | None = None, **extra: Any) -> Response:
    """A ``application/problem+json`` response."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + (kind or TITLES.get(status, "error").lower().replace(" ", "-")),
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return Response(
        orjson.dumps(body, default=str), status_code=status, media_type="application/problem+json"
    )


async def deepfaas_error_handler(request: Request, exc: Exception) -> Response:
    """Our errors, by their code."""
    assert isinstance(exc, DeepfaasError)
    status = STATUS_BY_CODE.get(exc.code, 500)
    fields = {k: v for k, v in exc.fields.items() if isinstance(v, str | int | float | list | dict)}
    if request.url.path.startswith("/api/v1/"):
        fields["error"] = exc.message  # where OpenWhisk's clients read the reason
    response = problem(status, exc.message, kind=exc.code.replace("_", "-"), **fields)
    if status == 503:  # the bus or capacity: worth trying again, after a pause
        response.headers["retry-after"] = str(exc.fields.get("retry_after", RETRY_AFTER_S))
    return response


async def validation_error_handler(_: Request, exc: Exception) -> Response:
    """Request validation (bodies, query parameters) as 422 naming each failing field."""
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
    return problem(422, detail or "invalid request", kind="invalid", errors=errors)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own HTTP errors (404 for unknown routes, 405 with `Allow`) as problems."""
    assert isinstance(exc, StarletteHTTPException)
    response = problem(exc.status_code, str(exc.detail))
    response.headers.update(exc.headers or {})
    if exc.status_code == 405:
        response.headers["allow"] = ", ".join(allowed_methods(request))
    return response


#: the methods a 405 may name in `Allow`
METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path (Starlette names only those of
    the first route that matches the path, and several routes may share it)."""
    routes = request.app.router.routes
    return [
        method
        for method in METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]


async def unexpected_error_handler(_: Request, exc: Exception) -> Response:
    """Anything else: a 500 problem, never a stack trace to the client; a bus that did not
    answer (nats-py's errors, wherever raised) is a 503 to try again."""
    if isinstance(exc, nats.errors.Error):
        response = problem(503, f"the bus did not answer: {type(exc).__name__}", kind="bus")
        response.headers["retry-after"] = str(RETRY_AFTER_S)
        return response
    return problem(500, f"internal error: {type(exc).__name__}")


async def json_encode_error_handler(_: Request, exc: Exception) -> Response:
    """A body's integer past 64 bits, which Python parsed and a route then sends on as JSON
    that no peer of ours reads: a 422. Any other value orjson cannot write is a fault of ours."""
    if "64-bit" in str(exc):
        return problem(422, f"the request cannot be sent on: {exc}", kind="invalid")
    log.error("a value could not be written as JSON", exc_info=exc)
    return problem(500, f"internal error: {type(exc).__name__}")
