"""Publishing CloudEvents on JetStream with the event id as the de-duplication key."""

from __future__ import annotations

from nats.js.api import PubAck

from eventbus.codec import to_nats
from eventbus.connection import Bus
from eventbus.types import CloudEvent, event_subject

MSG_ID_HEADER = "Nats-Msg-Id"


async def publish_event(
    bus: Bus,
    event: CloudEvent,
    *,
    subject: str | None = None,
    timeout: float = 5.0,
    msg_id: str | None = None,
) -> PubAck:
    """Publish in binary mode, acks pipelined (`Bus.pipeline`); a re-publish of the same id
    (or ``msg_id``, when given) inside the window is a duplicate."""
    headers, body = to_nats(event)
    headers[MSG_ID_HEADER] = msg_id or event.id
    return await bus.pipeline.publish(
        subject or event_subject(event.type, bus.prefix), body, headers=headers, timeout=timeout
    )
