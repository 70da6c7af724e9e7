"""GET /v1/events/stream: the caller's namespace's events, as stored, as server-sent events.

The stream reads EVENTS through an ordered consumer (`eventbus.event_feed`), so each stored
event comes once (a re-post of the same id is a duplicate JetStream never stored) and each
frame's ``id:`` is its stream sequence: a client that reconnects with ``Last-Event-ID``
resumes right after it and misses nothing stored meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated

import anyio
import nats.errors
import orjson
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from eventbus.codec import to_structured_json
from eventbus.errors import BusUnavailableError, InvalidEventError, ValidationFailedError
from eventbus.event_feed import EventFeed
from eventbus.filters import compile_filters
from eventbus.namespaces import event_namespace
from eventbus.types import CloudEvent
from gateway.auth.access import namespace
from gateway.state import state_of

router = APIRouter(prefix="/v1/events", tags=["events"])
KEEPALIVE_S = 15.0
#: how often a waiting stream looks whether the gateway is stopping (seconds)
POLL_S = 0.5
_CLOSING = "event_streams_closing"


def streams_closing(app: Starlette) -> asyncio.Event:
    """The event that ends every open event stream of ``app`` once set."""
    closing: asyncio.Event | None = getattr(app.state, _CLOSING, None)
    if closing is None:
        closing = asyncio.Event()
        setattr(app.state, _CLOSING, closing)
    return closing


def close_streams(app: Starlette) -> None:
    """End every event stream of ``app`` (the server is stopping): each finishes its response
    within `POLL_S`, so the server need not wait for the clients to hang up."""
    streams_closing(app).set()


def _matcher(
    ns: str, type_prefix: str | None, subject: str | None, filter_json: str | None
) -> Callable[[CloudEvent], bool]:
    accept = None
    if filter_json is not None:
        try:
            parsed = orjson.loads(filter_json)
        except orjson.JSONDecodeError as exc:
            raise ValidationFailedError(f"filter is not JSON: {exc}", field="filter") from exc
        accept = compile_filters(parsed if isinstance(parsed, list) else [parsed])

    def matches(event: CloudEvent) -> bool:
        if event_namespace(event.extensions) != ns:
            return False
        if type_prefix and not event.type.startswith(type_prefix):
            return False
        if subject and event.subject != subject:
            return False
        return accept is None or accept(event)

    return matches


def _frame(seq: int, event: CloudEvent) -> bytes | None:
    try:
        data = to_structured_json(event)
    except InvalidEventError:
        return None
    # a type is any string: keep a line break in it from ending the field
    kind = event.type.replace("\r", " ").replace("\n", " ").encode()
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, kind, data)


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "server-sent events: `id:` the stream sequence, `event:` the type, "
            "`data:` the event in the JSON event format",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        422: {"description": "an invalid filter, Last-Event-ID or since"},
    },
)
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
    since: Annotated[
        datetime | None,
        Query(
            description="start with the events stored from this time (RFC 3339; no offset: "
            "UTC) instead of the next one; Last-Event-ID wins over it"
        ),
    ] = None,
    last_event_id: Annotated[
        int | None,
        Header(
            alias="last-event-id",
            ge=0,
            description="resume after this stream sequence (the `id:` of the last frame seen)",
        ),
    ] = None,
) -> StreamingResponse:
    """Follow the namespace's events in the order EVENTS stored them, each once: from the next
    one stored, from a time (`since`), or after the last one a client saw (`Last-Event-ID`)."""
    state, ns = state_of(request), namespace(request)
    matches = _matcher(ns, type_prefix, subject, filter_json)
    closing = streams_closing(request.app)
    try:
        feed = await EventFeed.open(state.bus, after_seq=last_event_id, since=since)
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError, TimeoutError) as exc:
        raise BusUnavailableError(f"the bus did not open the event stream: {exc}") from exc

    async def frames() -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        # a frame with only an id sets the client's Last-Event-ID: it resumes from here even
        # if it hangs up before any event
        last_id = feed.start_after
        yield b": subscribed\n" + (b"" if last_id is None else b"id: %d\n" % last_id) + b"\n"
        quiet_since = loop.time()
        while not closing.is_set() and not state.bus.closing:
            try:
                stored = await feed.next(POLL_S)
            except nats.errors.ConnectionClosedError:
                return
            if stored is not None and matches(stored.event):
                frame = _frame(stored.seq, stored.event)
                if frame is not None:
                    yield frame
                    last_id, quiet_since = stored.seq, loop.time()
                    continue
            if loop.time() - quiet_since >= KEEPALIVE_S:
                # the id moves past events of no interest here: a resume skips them
                keepalive = b": keep-alive\n"
                if feed.last_seq and feed.last_seq != last_id:
                    last_id = feed.last_seq
                    keepalive += b"id: %d\n" % last_id
                yield keepalive + b"\n"
                quiet_since = loop.time()

    return _FeedResponse(feed, frames())


class _FeedResponse(StreamingResponse):
    """Server-sent events from a feed, which closes however the response ends (finished,
    cancelled because the client hung up, or never started)."""

    def __init__(self, feed: EventFeed, content: AsyncIterator[bytes]) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )
        self.feed = feed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await self.feed.close()
