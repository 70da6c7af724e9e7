"""POST /v1/events: any service puts a CloudEvent (HTTP binding, either mode) on the bus.

The event belongs to the caller's namespace: its ``namespace`` attribute is set to it, over
any value sent, so only that namespace's triggers and subscriptions see it. Types under the
platform's prefix are the platform's own (storage events included: nobody forges an upload),
and so are types that would land on the subjects of the platform's events.
"""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from eventbus.failover import publish_or_refuse
from eventbus.http_codec import from_http
from eventbus.namespaces import DEFAULT_NAMESPACE, EVENT_ATTRIBUTE
from eventbus.publish import publish_event
from eventbus.types import event_subject
from gateway.auth.access import namespace
from gateway.problems import problem
from gateway.state import state_of

router = APIRouter(prefix="/v1/events", tags=["events"])

#: first subject tokens of the platform's own events (``events.<domain>.…``)
PLATFORM_DOMAINS: Final = frozenset(
    {"activation", "invocation", "trigger", "runtime", "storage", "catalog"}
)

_BODY_DOC = {
    "requestBody": {
        "required": True,
        "description": "A CloudEvent: structured (`application/cloudevents+json`) or binary "
        "(`ce-*` headers, data as the body, its media type as Content-Type).",
        "content": {
            "application/cloudevents+json": {"schema": {"type": "object"}},
            "*/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


class Accepted(BaseModel):
    """The event is on the bus (or was already: ``duplicate``)."""

    id: str
    type: str
    subject: str = Field(description="the NATS subject it was published on")
    stream_seq: int = Field(description="its sequence in the EVENTS stream")
    duplicate: bool = Field(
        description="the same id was accepted from this namespace within the last 2 minutes"
    )


def reserved_reason(event_type: str, prefix: str) -> str | None:
    """Why a posted event type would forge the platform's own events, or None when it may pass."""
    if event_type.lower().startswith(prefix.lower() + "."):
        return (
            f"event type {event_type!r} is refused: event types under {prefix}. are the "
            "platform's own"
        )
    subject = event_subject(event_type, prefix)
    domain = subject.split(".")[1].lower()
    if domain in PLATFORM_DOMAINS:
        return (
            f"event type {event_type!r} would be published on {subject}, where the platform's "
            f"own {domain} events go: choose a type that does not start with {domain!r}"
        )
    return None


@router.post(
    "",
    status_code=202,
    response_model=Accepted,
    openapi_extra=_BODY_DOC,
    responses={
        400: {"description": "not a valid CloudEvent, or data declared JSON that is not JSON"},
        403: {"description": "reserved"},
    },
)
async def post_event(request: Request) -> Accepted | Response:
    """Publish a CloudEvent of the caller's namespace on EVENTS; a re-post of the same id within
    2 minutes is a duplicate."""
    state, ns = state_of(request), namespace(request)
    # InvalidEventError (400): not a CloudEvent, or data its content type says is JSON but is not
    event = from_http(request.headers, await request.body())
    reason = reserved_reason(event.type, state.bus.prefix)
    if reason is not None:
        return problem(403, reason, kind="reserved-type", event_type=event.type)
    event = event.model_copy(update={"extensions": {**event.extensions, EVENT_ATTRIBUTE: ns}})
    subject = event_subject(event.type, state.bus.prefix)
    # ids are de-duplicated per namespace: another namespace's id can neither suppress an
    # event nor be probed for
    msg_id = event.id if ns == DEFAULT_NAMESPACE else f"{ns}/{event.id}"
    # the bus away: 503 + Retry-After (BusRefusedError); a failover is waited out and the
    # same id published again, which EVENTS stores once
    ack = await publish_or_refuse(
        state.bus,
        lambda timeout: publish_event(
            state.bus, event, subject=subject, msg_id=msg_id, timeout=timeout
        ),
        what=f"event {event.id} was not stored",
    )
    return Accepted(
        id=event.id,
        type=event.type,
        subject=subject,
        stream_seq=int(ack.seq),
        duplicate=bool(ack.duplicate),
    )
