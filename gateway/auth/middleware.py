"""A pure ASGI middleware: authenticate, confine to the namespace, apply its limits.

Every request gets an ``x-request-id``; log lines carry it and the key's uuid, never a secret.
"""

from __future__ import annotations

import logging
import math
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth import policy
from gateway.auth.authenticator import Authenticator
from gateway.auth.errors import AuthError
from gateway.auth.types import Principal
from gateway.problems import problem

log = logging.getLogger(__name__)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
#: control characters, which no path of the API holds (Starlette would route ``/x\n`` as
#: ``/x``, its patterns ending in ``$``)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class AuthMiddleware:
    """Sets ``request.state.principal``; answers 401, 403 or 429 itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex[:16]
        send = _with_request_id(send, request_id)
        method, path = scope["method"], scope["path"]
        if _CONTROL.search(path):
            response = problem(404, "no resource has a control character in its path")
            await response(scope, receive, send)
            return
        auth: Authenticator = scope["app"].state.auth
        anonymous = policy.is_anonymous(method, path) or _open_predict(scope, method, path)
        principal: Principal | None = None
        try:
            if not anonymous or "authorization" in headers:
                principal = await auth.authenticate(headers.get("authorization"))
        except AuthError as exc:
            if not anonymous:
                log.info("request %s %s %s refused: %s", request_id, method, path, exc.message)
                response = problem(401, exc.message, kind="unauthorized")
                # a Basic challenge makes browsers prompt; the console signs in its own way
                console = policy.is_console_fragment(path)
                scheme = "Bearer" if console else "Basic"
                response.headers["www-authenticate"] = f'{scheme} realm="deepfaas"'
                await response(scope, receive, send)
                return
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["principal"] = principal
        if principal is None:
            await self.app(scope, receive, send)
            return
        ns = principal.namespace
        log.debug(
            "request %s %s %s: namespace %s, %s %s",
            request_id,
            method,
            path,
            ns,
            principal.method,
            principal.subject,
        )
        if not policy.allowed(ns, path):
            log.info("request %s: namespace %s may not use %s", request_id, ns, path)
            detail = "a resource shared by the platform: only the default namespace may use it"
            await problem(403, detail, kind="forbidden")(scope, receive, send)
            return
        wait = auth.quotas.take(ns)
        if wait > 0:
            await _too_many(scope, receive, send, f"namespace {ns!r} is over its rate limit", wait)
            return
        if not policy.is_invocation(method, path):
            await self.app(scope, receive, send)
            return
        if not auth.quotas.enter(ns):
            detail = f"namespace {ns!r} has {auth.quotas.concurrency} invocations in flight already"
            await _too_many(scope, receive, send, detail, 1.0)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            auth.quotas.leave(ns)


def _open_predict(scope: Scope, method: str, path: str) -> bool:
    """A predict call of a model the operator opened to anonymous callers (the route limits it)."""
    model = policy.predicted_model(method, path)
    return (
        model is not None and model in scope["app"].state.gateway.settings.anonymous_predict_models
    )


async def _too_many(scope: Scope, receive: Receive, send: Send, detail: str, wait: float) -> None:
    response = problem(429, detail, kind="too-many-requests")
    response.headers["retry-after"] = str(max(1, math.ceil(wait)))
    await response(scope, receive, send)


def _with_request_id(send: Send, request_id: str) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message.setdefault("headers", [])
            message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
        await send(message)

    return sending
