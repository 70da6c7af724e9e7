"""Templates, and the route class that turns the platform's errors into HTML fragments.

Page shells are public and hold no tenant data; fragments (under `/ui/x`) are authorised
by the gateway's `AuthMiddleware` like every `/v1` route and render only the caller's data.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final

import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from eventbus.errors import DeepfaasError, ValidationFailedError
from gateway.auth import policy
from gateway.auth.access import namespace
from gateway.auth.errors import ForbiddenError
from gateway.problems import STATUS_BY_CODE

HERE: Final = Path(__file__).resolve().parent
TEMPLATES: Final = Jinja2Templates(directory=HERE / "templates")
#: where the fragments are: each needs a credential (`AuthMiddleware` checks it)
FRAGMENTS: Final = policy.CONSOLE_FRAGMENTS


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


def _size(value: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value = value / 1024  # type: ignore[assignment]
    return str(value)


TEMPLATES.env.filters["pretty"] = _pretty
TEMPLATES.env.filters["ms"] = _ms
TEMPLATES.env.filters["size"] = _size


def fragment(
    request: Request,
    template: str,
    status_code: int = 200,
    trigger: str | None = None,
    **context: Any,
) -> Response:
    """An HTML fragment rendered from ``template`` (``trigger``: an htmx event to fire after)."""
    response = TEMPLATES.TemplateResponse(request, template, context, status_code=status_code)
    if trigger:
        response.headers["hx-trigger"] = trigger
    response.headers["cache-control"] = "no-store"
    return response


def json_field(text: str, field: str) -> Any:
    """The JSON a form field holds (None when blank); `ValidationFailedError` (422) if not JSON."""
    if not text.strip():
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailedError(f"{field} is not valid JSON: {exc}", field=field) from exc


def error_fragment(request: Request, status_code: int, message: str) -> Response:
    """The message of a refused or failed action, as the fragment in its place."""
    return fragment(request, "error.html", status_code=status_code, message=message)


def operator_only(request: Request, api_path: str) -> None:
    """Refuse as the `/v1` route of ``api_path`` would: platform-wide data is `default`'s."""
    if not policy.allowed(namespace(request), api_path):
        raise ForbiddenError(
            "a resource shared by the platform: only the default namespace may see it"
        )


class FragmentRoute(APIRoute):
    """A console route: our errors and bad forms become an HTML fragment with their status."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except DeepfaasError as exc:
                status = STATUS_BY_CODE.get(exc.code, 500)
                if status == 401:
                    raise
                return error_fragment(request, status, exc.message)
            except ValidationError as exc:
                parts = [
                    f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}"
                    for e in exc.errors(include_url=False)
                ]
                return error_fragment(request, 422, "; ".join(parts))
            except RequestValidationError as exc:
                parts = [
                    f"{'.'.join(str(p) for p in e['loc'][1:]) or 'form'}: {e['msg']}"
                    for e in exc.errors()
                ]
                return error_fragment(request, 422, "; ".join(parts))

        return handle
