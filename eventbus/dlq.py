"""Dead letters: invocations or deliveries that failed their last try, kept for replay."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from pydantic import BaseModel

from eventbus.codec import from_structured_json, to_structured_json
from eventbus.connection import Bus
from eventbus.consume import snapshot
from eventbus.errors import NotFoundError as DeepfaasNotFoundError
from eventbus.namespaces import SEPARATOR, is_qualified_name, namespace_of
from eventbus.publish import MSG_ID_HEADER
from eventbus.subjects import DLQ_ROOT, LEGACY_DEAD_LETTERS, dlq_subject
from eventbus.subscriptions import SUBSCRIPTION_KEY_PATTERN
from eventbus.types import DLQ_STREAM, CloudEvent

log = logging.getLogger(__name__)
#: the last letters a listing of one namespace or target reads first (then 4x, 16x, ...)
FIRST_WINDOW = 256
#: a target as stored: a function's or a subscription's internal name (the second allows
#: more than the first: capitals), both safe in a subject
_TARGET = re.compile(SUBSCRIPTION_KEY_PATTERN)


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
    letter = _letter(msg.data, seq)
    if letter is None or (namespace is not None and letter.owner != namespace):
        raise DeepfaasNotFoundError(f"no dead letter {seq}", seq=seq)
    return letter


async def list_dead_letters(
    bus: Bus, *, limit: int = 50, target: str | None = None, namespace: str | None = None
) -> list[DeadLetter]:
    """The newest dead letters first, optionally for one target (function or subscription,
    named as stored) and only those of ``namespace``.

    All of them: read back from the newest, ``limit`` reads. One namespace's or one target's:
    read through a consumer that filters their subjects (and those stored before subjects
    named the namespace), so another namespace's letters, however many, cost nothing."""
    if target is not None:
        if not _TARGET.fullmatch(target) or (
            namespace is not None and namespace_of(target) != namespace
        ):
            return []  # a name that cannot exist (or is another's) has no letters
        subjects = [dlq_subject("*", target), f"{DLQ_ROOT}.*.{target}"]
    elif namespace is not None:
        if not is_qualified_name(namespace) or SEPARATOR in namespace:
            return []
        subjects = [f"{DLQ_ROOT}.*.{namespace}.*", LEGACY_DEAD_LETTERS]
    else:
        return await _newest(bus, limit)

    def wanted(letter: DeadLetter) -> bool:  # a letter of the old subjects may be another's
        return (target is None or letter.target == target) and (
            namespace is None or letter.owner == namespace
        )

    return await _filtered(bus, subjects, wanted, limit)


async def _filtered(
    bus: Bus, subjects: list[str], wanted: Callable[[DeadLetter], bool], limit: int
) -> list[DeadLetter]:
    """The newest ``limit`` wanted letters on ``subjects``, newest first: the stream is read
    back in windows, each four times the last, through a consumer of the window's own that
    filters the subjects, until ``limit`` are found or the stream's start is reached. A
    namespace with many letters is served by the first window; one with few among many of
    others' by a few (their letters are never read)."""
    info = await bus.js.stream_info(DLQ_STREAM)
    first, end = max(1, int(info.state.first_seq)), int(info.state.last_seq) + 1
    found: list[DeadLetter] = []
    span = max(FIRST_WINDOW, 4 * limit)
    while end > first and len(found) < limit:
        start = max(first, end - span)
        found.extend(reversed(await _window(bus, subjects, wanted, start, end)))
        end, span = start, span * 4
    return found[:limit]


async def _window(
    bus: Bus, subjects: list[str], wanted: Callable[[DeadLetter], bool], start: int, end: int
) -> list[DeadLetter]:
    """The wanted letters on ``subjects`` with a sequence in [start, end), oldest first."""
    config = ConsumerConfig(
        filter_subjects=subjects,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=start,
    )
    letters: list[DeadLetter] = []
    async with contextlib.aclosing(snapshot(bus.nc, bus.js, DLQ_STREAM, config)) as batches:
        async for msgs in batches:
            for msg in msgs:
                seq = msg.metadata.sequence.stream
                if seq >= end:
                    return letters  # the next window's, read already
                letter = _letter(msg.data, seq)
                if letter is not None and wanted(letter):
                    letters.append(letter)
    return letters


def _letter(data: bytes | None, seq: int) -> DeadLetter | None:
    """A stored letter, or None (logged) for one that is not a letter: it hides no other."""
    try:
        letter = DeadLetter.model_validate_json(data or b"{}")
    except ValueError as exc:
        log.warning("dead letter %d is not readable: %s", seq, exc)
        return None
    letter.seq = seq
    return letter


async def _newest(bus: Bus, limit: int) -> list[DeadLetter]:
    """The newest ``limit`` letters of all, read back one by one from the last."""
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
        found.append(letter)
        seq -= 1
    return found


async def delete_dead_letter(bus: Bus, seq: int) -> None:
    """Remove a dead letter (after a replay or when it is not wanted)."""
    try:
        await bus.js.delete_msg(DLQ_STREAM, seq)
    except NotFoundError as exc:
        raise DeepfaasNotFoundError(f"no dead letter {seq}", seq=seq) from exc
