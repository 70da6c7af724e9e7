"""POST /v1/functions/{name}/invoke: sync (result in the body) or async (202 + activation id)."""

from __future__ import annotations

import re
import urllib.parse
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Path, Query, Request, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from eventbus.errors import DeepfaasError
from eventbus.namespaces import local_name
from gateway import problems
from gateway.auth.access import qualified
from gateway.bodies import Accepted
from gateway.problems import problem
from gateway.state import state_of
from runtimes.types import FUNCTION_NAME_PATTERN, ActivationRecord, ActivationStatus

router = APIRouter(prefix="/v1/functions", tags=["invoke"])
FORM = "application/x-www-form-urlencoded"


class BadRequestError(DeepfaasError):
    """The request itself is malformed."""

    code = "bad_request"


@router.post(
    "/{name}/invoke",
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": {"description": "the function's input"}}},
        }
    },
    responses={
        200: {"description": "the function's result (sync)"},
        202: {"model": Accepted, "description": "accepted (async, or a sync run past its wait)"},
        400: {"description": "malformed JSON body"},
        404: {"description": "unknown function"},
        413: {"description": "body over the limit"},
        422: {
            "description": "the input failed the function's input model, or the callback is "
            "at an address the platform does not send to (DEEPFAAS_EGRESS_ALLOW)"
        },
        502: {"description": "the function raised"},
        504: {"description": "the function ran past its timeout"},
    },
)
async def invoke(
    request: Request,
    name: Annotated[str, Path(pattern=FUNCTION_NAME_PATTERN)],
    async_: Annotated[bool, Query(alias="async", description="answer 202 at once")] = False,
    timeout: Annotated[
        float | None, Query(gt=0, le=3600, description="longest sync wait, seconds")
    ] = None,
    callback: Annotated[str | None, Query(description="URL that receives the record")] = None,
    prefer: Annotated[str | None, Header()] = None,
    x_callback_url: Annotated[str | None, Header()] = None,
) -> Response:
    """Invoke a function with the request body as its input."""
    callback = callback or x_callback_url
    if callback is not None and not callback.startswith(("http://", "https://")):
        raise BadRequestError("the callback must be an http(s) URL")
    if callback is not None:
        state_of(request).settings.egress().check_literal(callback)
    run_async = async_ or (prefer is not None and "respond-async" in prefer.lower()) or callback
    return await _invoke(request, name, bool(run_async), timeout, callback)


async def _invoke(
    request: Request, name: str, run_async: bool, timeout: float | None, callback: str | None
) -> Response:
    """The work of an invoke, once its parameters are read (by FastAPI or `InvokeFastPath`)."""
    state = state_of(request)
    spec = state.cache.get(qualified(request, name))
    body, content_type = normalise_body(await request.body(), request.headers.get("content-type"))
    if run_async:
        activation_id = await state.invoker.invoke_async(
            spec, body, content_type=content_type, callback=callback
        )
        state.metrics.accepted.labels(spec.name, "async").inc()
        return _accepted(activation_id)
    wait = min(timeout or state.settings.sync_wait_s, state.settings.sync_wait_s)
    outcome = await state.invoker.invoke_sync(spec, body, content_type=content_type, wait=wait)
    state.metrics.accepted.labels(spec.name, "sync").inc()
    if outcome.record is None:
        return _accepted(outcome.activation_id)
    return sync_response(outcome.record)


class InvokeFastPath:
    """Serves the plainest invokes without FastAPI's routing and parameter solving.

    A pure ASGI middleware, inside the auth and body-limit middlewares: a POST to
    `/v1/functions/{name}/invoke` with no query string but ``async=true``, and neither `Prefer`
    nor `X-Callback-Url`, runs the route's own work (`_invoke`) with our errors mapped by the
    same table; every other request (and every other route) goes on to FastAPI, which also
    keeps documenting this one.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = _FAST.match(scope["path"]) if scope["type"] == "http" else None
        if (
            found is None
            or scope["method"] != "POST"
            or scope["query_string"] not in (b"", b"async=true")
            or any(key in (b"prefer", b"x-callback-url") for key, _ in scope["headers"])
        ):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await _invoke(
                request, found.group(1), scope["query_string"] == b"async=true", None, None
            )
        except DeepfaasError as exc:
            response = await problems.deepfaas_error_handler(request, exc)
        await response(scope, receive, send)


_FAST = re.compile(r"^/v1/functions/(" + FUNCTION_NAME_PATTERN.strip("^$") + r")/invoke$")


def normalise_body(body: bytes, content_type: str | None) -> tuple[bytes, str]:
    """JSON stays JSON (400 if malformed); forms become JSON objects; other types stay bytes.

    `curl -d` sends form-encoded content by default: a body that parses as JSON is taken as
    JSON whatever it is labelled, as OpenWhisk does.
    """
    kind = (content_type or "application/json").split(";")[0].strip().lower()
    if not body:
        return body, "application/json"
    if "json" in kind or kind in (FORM, "text/plain"):
        try:
            orjson.loads(body)
            return body, "application/json"
        except orjson.JSONDecodeError as exc:
            if "json" in kind:
                raise BadRequestError(f"the body is not valid JSON: {exc}") from exc
        if kind == FORM:
            pairs = urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
            return orjson.dumps(dict(pairs)), "application/json"
    return body, content_type or "application/octet-stream"


def _accepted(activation_id: str) -> Response:
    location = f"/v1/activations/{activation_id}"
    return Response(
        orjson.dumps({"activation_id": activation_id, "status": "accepted", "location": location}),
        status_code=202,
        media_type="application/json",
        headers={"location": location, "x-activation-id": activation_id},
    )


def sync_response(record: ActivationRecord) -> Response:
    """The HTTP answer for a finished activation."""
    headers = {"x-activation-id": record.id, "x-function-version": str(record.version)}
    if record.status is ActivationStatus.SUCCESS:
        return Response(orjson.dumps(record.result), media_type="application/json", headers=headers)
    common = {"activation_id": record.id, "function": local_name(record.function)}
    if record.status is ActivationStatus.INVALID:
        response = problem(
            422,
            record.error or "invalid input",
            kind="invalid-input",
            errors=record.error_detail,
            **common,
        )
    elif record.status is ActivationStatus.TIMEOUT:
        response = problem(504, record.error or "timed out", kind="timeout", **common)
    else:
        response = problem(
            502, record.error or "the function failed", kind="function-error", **common
        )
    response.headers.update(headers)
    return response
