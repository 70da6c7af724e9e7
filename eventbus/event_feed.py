"""Reading the stored events in order: an ordered (ephemeral) consumer on EVENTS.

A feed reads what the stream holds, so an event published twice with the same id (the second
dropped by JetStream as a duplicate) comes once, and a reader that knows the last sequence it
saw resumes right after it. nats-py's ordered consumer re-creates itself from the last
sequence it delivered when it sees a gap or loses its heartbeats, so nothing is skipped.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from eventbus.codec import from_nats
from eventbus.connection import Bus
from eventbus.errors import InvalidEventError, ValidationFailedError
from eventbus.subjects import ALL_EVENTS, EVENT_SUBJECTS
from eventbus.types import EVENTS_STREAM, CloudEvent

log = logging.getLogger(__name__)

#: heartbeats of the server to the feed (seconds): two missed ones re-create the consumer
HEARTBEAT_S = 5.0


@dataclass(frozen=True)
class StoredEvent:
    """An event as EVENTS holds it, with its stream sequence."""

    seq: int
    event: CloudEvent


class EventFeed:
    """The events of EVENTS from a starting point on, each once, in stream order."""

    def __init__(self, sub: JetStreamContext.PushSubscription, start_after: int | None) -> None:
        self._sub = sub
        #: the sequence the feed starts after, when known (not for a start from a time)
        self.start_after = start_after
        #: the sequence of the last message read, decodable or not
        self.last_seq = start_after or 0

    @classmethod
    async def open(
        cls, bus: Bus, *, after_seq: int | None = None, since: datetime | None = None
    ) -> EventFeed:
        """Follow EVENTS after sequence ``after_seq``, or from the time ``since``, or (neither)
        from the next event stored; ``after_seq`` wins over ``since``.

        A ``since`` that cannot be a UTC time raises `ValidationFailedError`.
        """
        config = ConsumerConfig(filter_subjects=list(EVENT_SUBJECTS))
        if after_seq is None and since is not None:
            start_after: int | None = None
            config.deliver_policy = DeliverPolicy.BY_START_TIME
            try:  # a time without an offset is UTC's
                config.opt_start_time = since.astimezone(UTC) if since.tzinfo else since
            except OverflowError as exc:  # e.g. year 9999 at -14:00
                raise ValidationFailedError(
                    f"since {since.isoformat()} is out of range", field="since"
                ) from exc
        else:
            # "from now on" as a sequence, not DeliverPolicy.NEW: the first sequence is known
            # before anything arrives, so a reader can resume even with no event seen; a
            # sequence past the last (a stream made anew) resumes from now on, not from then
            last = int((await bus.js.stream_info(EVENTS_STREAM)).state.last_seq)
            after_seq = last if after_seq is None else min(after_seq, last)
            start_after = after_seq
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = after_seq + 1
        sub = await bus.js.subscribe(
            ALL_EVENTS,
            stream=EVENTS_STREAM,
            config=config,
            ordered_consumer=True,
            idle_heartbeat=HEARTBEAT_S,
        )
        return cls(sub, start_after)

    async def next(self, timeout: float) -> StoredEvent | None:
        """The next stored event; None when nothing came within ``timeout`` seconds or what
        came is not a CloudEvent (skipped: ``last_seq`` still moves past it).

        A closed connection raises `nats.errors.ConnectionClosedError`.
        """
        try:
            msg = await self._sub.next_msg(timeout=timeout)
        except nats.errors.TimeoutError:
            return None
        seq = int(msg.metadata.sequence.stream)
        self.last_seq = seq
        try:
            return StoredEvent(seq, from_nats(msg.headers, msg.data))
        except InvalidEventError as exc:
            log.debug("EVENTS message %d is not a CloudEvent: %s", seq, exc)
            return None

    async def close(self) -> None:
        """Stop the consumer (the server drops an ephemeral consumer without interest)."""
        with contextlib.suppress(nats.errors.Error, OSError):
            await self._sub.unsubscribe()
