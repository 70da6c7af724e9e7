"""The invocation envelope: a CloudEvent per invocation, its id being the activation id."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from nats.js.api import PubAck

from eventbus.codec import to_nats
from eventbus.connection import Bus
from eventbus.publish import MSG_ID_HEADER
from eventbus.types import CloudEvent, invoke_subject, new_id

INVOCATION_TYPE_SUFFIX = "invocation.requested"
#: extension of a sync request whose activation id the gateway made for it (held by nothing
#: else yet): its worker may write the final record without a claim first
FRESH_ID = "freshid"


def new_invocation(
    bus: Bus,
    function: str,
    body: bytes,
    *,
    source: str,
    activation_id: str | None = None,
    content_type: str = "application/json",
    mode: str = "async",
    callback: str | None = None,
    cause: str | None = None,
    extra: dict[str, str] | None = None,
) -> CloudEvent:
    """An invocation of ``function`` with ``body`` as input, accepted now."""
    extensions: dict[str, str | int | bool] = {"mode": mode}
    if callback:
        extensions["callback"] = callback
    if cause:
        extensions["causeid"] = cause
    if extra:
        extensions.update(extra)
    return CloudEvent(
        id=activation_id or new_id(),
        source=source,
        type=bus.event_type(INVOCATION_TYPE_SUFFIX),
        subject=function,
        time=datetime.now(UTC),
        datacontenttype=content_type,
        data=body,
        extensions=extensions,
    )


async def enqueue(bus: Bus, invocation: CloudEvent, *, timeout: float = 5.0) -> PubAck:
    """Put an invocation on its function's work queue; the same activation id is queued once
    (acks pipelined, `Bus.pipeline`: `js.publish`'s errors)."""
    return await (await _send(bus, invocation, timeout))


async def enqueue_many(
    bus: Bus, invocations: list[CloudEvent], *, timeout: float = 5.0, window: int = 256
) -> list[BaseException | None]:
    """Queue many invocations with pipelined acks: up to ``window`` publishes go out back to
    back and their acks are awaited together, not one round trip each. One entry per
    invocation: None when JetStream stored it, else the error (a retry with the same ids is
    de-duplicated)."""
    outcome: list[BaseException | None] = []
    for start in range(0, len(invocations), window):
        sent: list[asyncio.Future[PubAck] | BaseException] = []
        for invocation in invocations[start : start + window]:
            try:
                sent.append(await _send(bus, invocation, timeout))
            except Exception as exc:  # not written: this input's outcome, the others go on
                sent.append(exc)
        acks = await asyncio.gather(
            *(s for s in sent if not isinstance(s, BaseException)), return_exceptions=True
        )
        answers = iter(acks)
        for each in sent:
            answer = each if isinstance(each, BaseException) else next(answers)
            outcome.append(answer if isinstance(answer, BaseException) else None)
    return outcome


async def _send(bus: Bus, invocation: CloudEvent, timeout: float) -> asyncio.Future[PubAck]:
    """Write an invocation's publish; the future of its ack."""
    if invocation.subject is None:
        raise ValueError("an invocation names its function in `subject`")
    headers, body = to_nats(invocation)
    headers[MSG_ID_HEADER] = invocation.id
    return await bus.pipeline.send(
        invoke_subject(invocation.subject), body, headers=headers, timeout=timeout
    )


def invocation_input(invocation: CloudEvent) -> Any:
    """The raw input bytes of an invocation."""
    return invocation.data or b""
