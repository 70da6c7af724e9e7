"""GET /v1/events/stream: live events of the caller's namespace as server-sent events."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from nats.aio.msg import Msg

from eventbus.codec import from_nats, to_structured_json
from eventbus.errors import InvalidEventError, ValidationFailedError
from eventbus.filters import compile_filters
from eventbus.namespaces import event_namespace
from gateway.auth.access import namespace
from gateway.state import state_of

router = APIRouter(prefix="/v1/events", tags=["events"])
KEEPALIVE_S = 15.0
QUEUE_LIMIT = 10_000


@router.get("/stream", response_class=StreamingResponse)
async def stream_events(
    request: Request,
    type_prefix: Annotated[
        str | None, Query(alias="type", description="only events whose type starts so")
    ] = None,
    subject: Annotated[str | None, Query(description="only events with this subject")] = None,
    filter_json: Annotated[
        str | None,
        Query(
            alias="filter",
            description="CloudEvents Subscriptions API filters as JSON (a list is an implicit all)",
        ),
    ] = None,
) -> StreamingResponse:
    """Follow the namespace's events as they are published (from now on), in CloudEvents JSON
    format."""
    state, ns = state_of(request), namespace(request)
    queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_LIMIT)
    accept = None
    if filter_json is not None:
        try:
            parsed = orjson.loads(filter_json)
        except orjson.JSONDecodeError as exc:
            raise ValidationFailedError(f"filter is not JSON: {exc}", field="filter") from exc
        accept = compile_filters(parsed if isinstance(parsed, list) else [parsed])

    async def _on(msg: Msg) -> None:
        try:
            event = from_nats(msg.headers, msg.data)
        except InvalidEventError:
            return
        if event_namespace(event.extensions) != ns:
            return
        if type_prefix and not event.type.startswith(type_prefix):
            return
        if subject and event.subject != subject:
            return
        if accept is not None and not accept(event):
            return
        frame = b"id: " + event.id.encode() + b"\nevent: " + event.type.encode() + b"\ndata: "
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(frame + to_structured_json(event) + b"\n\n")

    sub = await state.bus.nc.subscribe("events.>", cb=_on)

    async def frames() -> AsyncIterator[bytes]:
        try:
            yield b": subscribed\n\n"
            while not await request.is_disconnected():
                try:
                    yield await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield b": keep-alive\n\n"
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    return StreamingResponse(
        frames(), media_type="text/event-stream", headers={"cache-control": "no-cache"}
    )
