"""The scheduler: fires the ticks of scheduled triggers (and event schedules), once each.

It runs inside every dispatcher; with two dispatchers both see every tick, so each tick is
claimed first. The `schedules` KV bucket holds, per owner, the last tick claimed
(``fired.<owner>``): a dispatcher claims a tick by a compare-and-set of that record (only one
writer of a revision wins), then enqueues the tick's invocation under the tick's deterministic
id (`eventbus.schedules.tick_id`), then marks the record done. A dispatcher that dies between
claim and enqueue leaves the record pending: after `CLAIM_LEASE_S` any dispatcher enqueues that
same tick again (JetStream's ``Nats-Msg-Id`` window and the worker's activation claim make a
repeat one run). So no tick runs twice, even long after JetStream's 2-minute window.

A tick found more than ``grace_s`` after its time was missed (the platform was down): with
``catch_up: once`` the latest missed tick runs once, with ``skip`` none does. A disabled
trigger's ticks are claimed without running. The record remembers when the owner was created,
so a trigger deleted and made again starts afresh.

Event schedules (``emit.<owner>`` in the same bucket) publish an event per tick instead of
invoking a function: OpenWhisk's alarms feed fires its trigger's rules this way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from typing import Any, Final

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field

from eventbus.connection import Bus
from eventbus.kv import read, write
from eventbus.namespaces import EVENT_ATTRIBUTE, namespace_of
from eventbus.schedules import TICK_TYPE_SUFFIX, Clock, Schedule, tick_id
from eventbus.streams import SCHEDULES_KV
from eventbus.types import CloudEvent

log = logging.getLogger(__name__)

FIRED_PREFIX: Final = "fired."
EMIT_PREFIX: Final = "emit."
#: seconds after which another dispatcher finishes a tick claimed but not confirmed
CLAIM_LEASE_S: Final = 10.0
#: most ticks one owner fires in one pass (a burst after a slow pass)
MAX_BURST: Final = 100

Fire = Callable[[datetime], Awaitable[None]]


class TickRecord(BaseModel):
    """The last tick claimed for an owner (``fired.<owner>``), and whether it ran."""

    created: datetime = Field(description="when the owner was created (a new one re-arms)")
    since: datetime = Field(description="ticks after this are due (the arming time)")
    last: datetime | None = Field(default=None, description="the last tick claimed")
    done: bool = Field(default=True, description="its invocation is enqueued (or not wanted)")
    by: str = Field(default="", description="the scheduler that claimed it")
    claimed: float = Field(default=0.0, description="when, in Unix seconds of real time")


class EventSchedule(BaseModel):
    """A schedule that publishes an event per tick (as Knative's PingSource does)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="internal name of the owner (`<namespace>=<name>`)")
    schedule: Schedule
    type: str = Field(min_length=1, description="the full event type of each tick's event")
    subject: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    created: datetime


@dataclass(frozen=True)
class Scheduled:
    """One owner of a schedule, as the scheduler sees it on a pass."""

    owner: str
    schedule: Schedule
    created: datetime
    enabled: bool
    fire: Fire


async def put_event_schedule(bus: Bus, found: EventSchedule) -> None:
    """Create or replace an event schedule."""
    kv = await bus.kv(SCHEDULES_KV)
    await kv.put(EMIT_PREFIX + found.name, found.model_dump_json().encode())


async def get_event_schedule(bus: Bus, name: str) -> EventSchedule | None:
    """The event schedule of an owner, or None."""
    found = await read(await bus.kv(SCHEDULES_KV), EMIT_PREFIX + name, EventSchedule)
    return found[0] if found else None


async def delete_event_schedule(bus: Bus, name: str) -> bool:
    """Forget an owner's event schedule (and its record); whether there was one."""
    found = await get_event_schedule(bus, name) is not None
    kv = await bus.kv(SCHEDULES_KV)
    for key in (EMIT_PREFIX + name, FIRED_PREFIX + EMIT_PREFIX + name):
        with contextlib.suppress(KeyNotFoundError):
            await kv.delete(key)
    return found


async def last_tick(bus: Bus, owner: str, created: datetime) -> datetime | None:
    """The last tick of an owner that ran (or was passed over), if any since it was created."""
    found = await read(await bus.kv(SCHEDULES_KV), FIRED_PREFIX + owner, TickRecord)
    if found is None or found[0].created != created or not found[0].done:
        return None
    return found[0].last


def tick_event(bus: Bus, owner: str, tick: datetime, payload: dict[str, Any]) -> CloudEvent:
    """The event of one tick of a trigger: its time is the tick's, its data the payload and
    ``tick`` (RFC 3339)."""
    return CloudEvent.create(
        id=tick_id(owner, tick),
        type=bus.event_type(TICK_TYPE_SUFFIX),
        source=f"/triggers/{owner}",
        subject=owner,
        time=tick,
        data={**payload, "tick": tick.isoformat()},
        extensions={EVENT_ATTRIBUTE: namespace_of(owner)},
    )


def emitted_event(found: EventSchedule, tick: datetime) -> CloudEvent:
    """The event an event schedule publishes for one tick."""
    return CloudEvent.create(
        id=tick_id(EMIT_PREFIX + found.name, tick),
        type=found.type,
        source=f"/schedules/{found.name}",
        subject=found.subject,
        time=tick,
        data=found.data,
        extensions={EVENT_ATTRIBUTE: namespace_of(found.name)},
    )


class Scheduler:
    """Fires due ticks of what ``owners()`` lists, every ``poll_s`` seconds of real time."""

    def __init__(
        self,
        bus: Bus,
        clock: Clock,
        owners: Callable[[], Iterable[Scheduled]],
        *,
        grace_s: float = 30.0,
        poll_s: float = 0.5,
        name: str = "",
    ) -> None:
        self.bus = bus
        self.clock = clock
        self.owners = owners
        self.grace = timedelta(seconds=grace_s)
        self.poll_s = poll_s
        self.name = name or f"scheduler-{id(self):x}"
        self.fired = 0
        #: owner -> (created, schedule, next tick not yet due): no bucket read until it is due
        self._next: dict[str, tuple[datetime, Schedule, datetime | None]] = {}

    async def run(self) -> None:
        """Pass after pass until cancelled; what fails is logged and tried on the next pass."""
        while True:
            try:
                await self.run_pass()
            except Exception as exc:  # the clock could not be read
                log.warning("schedule pass failed (%s); trying again", exc)
            await asyncio.sleep(self.poll_s)

    async def run_pass(self) -> None:
        """Fire every tick that is due now."""
        now = self.clock.now()
        seen = set()
        for item in self.owners():
            seen.add(item.owner)
            if not self._due(item, now):
                continue
            self._next.pop(item.owner, None)
            try:
                await self._advance(item, now)
            except Exception as exc:  # the bus failed: this owner's ticks wait for the next pass
                log.warning("schedule %s: pass failed (%s); trying again", item.owner, exc)
        for gone in set(self._next) - seen:
            del self._next[gone]

    def _due(self, item: Scheduled, now: datetime) -> bool:
        """Whether the owner may have a tick due (unknown, changed, or its next tick came)."""
        cached = self._next.get(item.owner)
        if cached is None or cached[:2] != (item.created, item.schedule):
            return True
        return cached[2] is not None and cached[2] <= now

    async def _advance(self, item: Scheduled, now: datetime) -> None:
        kv = await self.bus.kv(SCHEDULES_KV)
        key = FIRED_PREFIX + item.owner
        found = await read(kv, key, TickRecord)
        record, revision = found if found else (None, None)
        if record is None or record.created != item.created:
            record = TickRecord(created=item.created, since=min(now, item.created))
            revision = await _swap(kv, key, record, revision)
            if revision is None:
                return  # another dispatcher armed it: the next pass sees its record
        if not record.done and record.last is not None:
            if record.by != self.name and time.time() - record.claimed < CLAIM_LEASE_S:
                return  # another dispatcher is firing it
            revision = await self._fire(item, kv, key, record, revision)
            if revision is None:
                return
        base = record.last or record.since
        for tick, run in self._plan(item, base, now):
            claim = record.model_copy(
                update={"last": tick, "done": not run, "by": self.name, "claimed": time.time()}
            )
            revision = await _swap(kv, key, claim, revision)
            if revision is None:
                return  # another dispatcher claimed it
            record = claim
            if run:
                revision = await self._fire(item, kv, key, record, revision)
                if revision is None:
                    return
        upcoming = item.schedule.next_after(max(base, now))
        self._next[item.owner] = (item.created, item.schedule, upcoming)

    async def _fire(
        self, item: Scheduled, kv: KeyValue, key: str, record: TickRecord, revision: int | None
    ) -> int | None:
        """Run the claimed tick, then mark it done; the new revision (None: lost the record)."""
        assert record.last is not None
        await item.fire(record.last)
        self.fired += 1
        return await _swap(kv, key, record.model_copy(update={"done": True}), revision)

    def _plan(self, item: Scheduled, base: datetime, now: datetime) -> list[tuple[datetime, bool]]:
        """The ticks after ``base`` to claim now, and whether each runs."""
        schedule = item.schedule
        first = schedule.next_after(base)
        if first is None or first > now:
            return []
        plan: list[tuple[datetime, bool]] = []
        cut = now - self.grace
        if first <= cut:
            missed = schedule.last_at_or_before(cut)
            if missed is not None and missed > base:
                run = item.enabled and schedule.catch_up == "once"
                plan.append((missed, run))
                log.info(
                    "schedule %s: tick %s was missed (%s)",
                    item.owner,
                    missed,
                    "run once" if run else "skipped",
                )
        timely = islice(schedule.ticks(max(base, cut), now), MAX_BURST)
        plan += [(tick, item.enabled) for tick in timely]
        return plan


async def _swap(kv: KeyValue, key: str, record: TickRecord, revision: int | None) -> int | None:
    """Compare-and-set: the new revision, or None when someone else wrote first."""
    return await write(kv, key, record.model_dump_json().encode(), last=revision)
