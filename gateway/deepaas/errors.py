"""Errors on `/v2` as DEEPaaS answers them: 422 `{"field": ["message"]}`, else a plain message.

DEEPaaS (aiohttp + webargs) answers invalid arguments with a JSON object of field names to lists
of messages, and other errors with `text/plain` `"<code>: <reason phrase>"`. Its clients (the
DEEP dashboard, `deepaas-cli`) read those; problem+json stays on `/v1`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from eventbus.errors import DeepfaasError
from gateway.problems import STATUS_BY_CODE

#: the key of an error that names no field (webargs uses `_schema` for such errors)
NO_FIELD = "_schema"


def field_errors(errors: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
    """pydantic-style errors (`loc`, `msg`) as webargs writes them: field -> messages."""
    out: dict[str, list[str]] = {}
    for error in errors:
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path", "form")]
        out.setdefault(loc[0] if loc else NO_FIELD, []).append(str(error.get("msg", "invalid")))
    return out


def invalid(errors: dict[str, list[str]]) -> Response:
    """A DEEPaaS 422."""
    return Response(orjson.dumps(errors), status_code=422, media_type="application/json")


def message(status: int, reason: str = "") -> Response:
    """A DEEPaaS error other than 422: `<code>: <phrase>`, then our reason on the next line."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    text = f"{status}: {phrase}" + (f"\n{reason}" if reason and reason != phrase else "")
    return Response(text, status_code=status, media_type="text/plain; charset=utf-8")


def render(exc: Exception) -> Response:
    """The DEEPaaS answer for an error raised by a `/v2` route."""
    if isinstance(exc, RequestValidationError):
        return invalid(field_errors(exc.errors()))
    if isinstance(exc, DeepfaasError):
        status = STATUS_BY_CODE.get(exc.code, 500)
        if status == 422:
            listed = exc.fields.get("errors")
            if isinstance(listed, list) and listed:
                return invalid(field_errors(e for e in listed if isinstance(e, dict)))
            loc = exc.fields.get("loc")
            field = str(loc[-1]) if isinstance(loc, list) and loc else NO_FIELD
            return invalid({field: [exc.message]})
        return message(status, exc.message)
    assert isinstance(exc, HTTPException)
    response = message(exc.status_code, str(exc.detail))
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


class DeepaasRoute(APIRoute):
    """A route whose errors are rendered DEEPaaS's way instead of as problems."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except (RequestValidationError, DeepfaasError, HTTPException) as exc:
                return render(exc)

        return handle
