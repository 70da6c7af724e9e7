"""OpenWhisk's error body on `/api/v1`: `application/json` `{"error": ..., "code": ...}`.

The gateway answers every error as RFC 9457 problem+json; OpenWhisk's clients read only
`application/json` bodies (the npm client shows "Response Missing Error Message." for anything
else). This ASGI middleware, outside every other, rewrites the problems of `/api/v1` routes:
`detail` becomes `error`, the request id becomes `code` (OpenWhisk's transaction id), and a
request validation problem (422) becomes 400, as OpenWhisk answers a bad query value or body.
`/v1` keeps problem+json.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

OPENWHISK_PREFIX = "/api/v1/"
_PROBLEM = b"application/problem+json"


def openwhisk_error(detail: str, code: str, activation_id: str | None = None) -> bytes:
    """OpenWhisk's error body (with the activation id where one ran, e.g. a result too large)."""
    body = {"error": detail, "code": code}
    if activation_id:
        body["activationId"] = activation_id
    return orjson.dumps(body)


class OpenWhiskErrors:
    """Turns problem+json answers of `/api/v1` into OpenWhisk's `{error, code}`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(OPENWHISK_PREFIX):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def sending(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                if content_type.startswith(_PROBLEM):
                    start = message
                    return
                await send(message)
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                await _answer(start, b"".join(chunks), send)

        await self.app(scope, receive, sending)


async def _answer(start: Message, problem: bytes, send: Send) -> None:
    try:
        doc: Any = orjson.loads(problem)
    except orjson.JSONDecodeError:
        doc = {}
    doc = doc if isinstance(doc, dict) else {}
    status = int(start["status"])
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
    request_id = dict(headers).get(b"x-request-id", b"").decode("latin-1")
    detail = doc.get("detail") or doc.get("title") or "error"
    activation_id = doc.get("activation_id")
    body = openwhisk_error(
        str(detail), request_id, activation_id if isinstance(activation_id, str) else None
    )
    headers = [(k, v) for k, v in headers if k.lower() != b"content-type"]
    headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send(
        {
            "type": "http.response.start",
            "status": 400 if status == 422 else status,
            "headers": headers,
        }
    )
    await send({"type": "http.response.body", "body": body})
