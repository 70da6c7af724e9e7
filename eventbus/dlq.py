"""Dead letters: invocations or deliveries that failed their last try, kept for replay."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson
from nats.js.errors import NotFoundError
from pydantic import BaseModel

from eventbus.codec import from_structured_json, to_structured_json
from eventbus.connection import Bus
from eventbus.errors import NotFoundError as DeepfaasNotFoundError
from eventbus.namespaces import namespace_of
from eventbus.publish import MSG_ID_HEADER
from eventbus.subjects import dlq_subject
from eventbus.types import DLQ_STREAM, CloudEvent

log = logging.getLogger(__name__)


class DeadLetter(BaseModel):
    """One dead-lettered message: what was sent, why it failed, how often it was tried."""

    seq: int = 0
    kind: str
    target: str
    event: dict[str, Any]
    error: str
    traceback: str | None = None
    attempts: int
    time: datetime
    activation_id: str | None = None

    @property
    def owner(self) -> str:
        """The namespace whose letter it is: its target's (a function or a subscription, named
        as stored); the platform's own (a storage bridge's) are `default`'s."""
        return namespace_of(self.target)

    def cloud_event(self) -> CloudEvent:
        """The original CloudEvent, decoded."""
        return from_structured_json(orjson.dumps(self.event))


async def dead_letter(
    bus: Bus,
    *,
    kind: str,
    target: str,
    event: CloudEvent,
    error: str,
    attempts: int,
    traceback: str | None = None,
    activation_id: str | None = None,
) -> None:
    """Record a dead letter once (its key is the event id and target)."""
    letter = DeadLetter(
        kind=kind,
        target=target,
        event=orjson.loads(to_structured_json(event)),
        error=error,
        traceback=traceback,
        attempts=attempts,
        time=datetime.now(UTC),
        activation_id=activation_id,
    )
    await bus.js.publish(
        dlq_subject(kind, target),
        letter.model_dump_json(exclude={"seq"}).encode(),
        headers={MSG_ID_HEADER: f"dlq-{kind}-{target}-{event.id}"},
    )
    log.warning(
        "dead-lettered %s %s for %s after %d tries: %s", kind, event.id, target, attempts, error
    )


async def get_dead_letter(bus: Bus, seq: int, *, namespace: str | None = None) -> DeadLetter:
    """One dead letter by its stream sequence; with ``namespace``, only one of that
    namespace's (another's is not found, as if it were not there)."""
    try:
        msg = await bus.js.get_msg(DLQ_STREAM, seq)
    except NotFoundError as exc:
        raise DeepfaasNotFoundError(f"no dead letter {seq}", seq=seq) from exc
    letter = DeadLetter.model_validate_json(msg.data or b"{}")
    letter.seq = seq
    if namespace is not None and letter.owner != namespace:
        raise DeepfaasNotFoundError(f"no dead letter {seq}", seq=seq)
    return letter


async def list_dead_letters(
    bus: Bus, *, limit: int = 50, target: str | None = None, namespace: str | None = None
) -> list[DeadLetter]:
    """The newest dead letters first, optionally for one target (function or subscription,
    named as stored) and only those of ``namespace``."""
    info = await bus.js.stream_info(DLQ_STREAM)
    first, last = int(info.state.first_seq), int(info.state.last_seq)
    found: list[DeadLetter] = []
    seq = last
    while seq >= first and seq > 0 and len(found) < limit:
        try:
            letter = await get_dead_letter(bus, seq)
        except DeepfaasNotFoundError:
            seq -= 1
            continue
        if (target is None or letter.target == target) and (
            namespace is None or letter.owner == namespace
        ):
            found.append(letter)
        seq -= 1
    return found


async def delete_dead_letter(bus: Bus, seq: int) -> None:
    """Remove a dead letter (after a replay or when it is not wanted)."""
    try:
        await bus.js.delete_msg(DLQ_STREAM, seq)
    except NotFoundError as exc:
        raise DeepfaasNotFoundError(f"no dead letter {seq}", seq=seq) from exc
