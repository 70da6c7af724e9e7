"""A pure ASGI middleware that refuses bodies over the configured size with 413."""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.problems import problem

HINT = (
    "upload large inputs to storage (PUT /v1/buckets/{bucket}/objects/{key}) and pass a "
    "reference instead"
)


class _TooLargeError(Exception):
    pass


class BodyLimit:
    """Checks Content-Length up front and counts streamed bodies as they arrive."""

    def __init__(self, app: ASGIApp, max_bytes: int, exempt_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(scope, receive, send, int(value))
                return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLargeError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLargeError:
            if not started:
                await self._refuse(scope, receive, send, seen)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: Any) -> None:
        response = problem(
            413,
            f"the request body ({size} bytes or more) is over the {self.max_bytes}-byte "
            f"limit; {HINT}",
            kind="too-large",
            limit=self.max_bytes,
        )
        await response(scope, receive, send)
