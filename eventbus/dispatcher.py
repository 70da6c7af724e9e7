"""The trigger dispatcher: consumes EVENTS, matches triggers, enqueues one invocation per match.

A trigger matches only events of its own namespace (the event's ``namespace`` attribute, none
meaning ``default``). The activation id of (event, trigger) is derived from both, so a
redelivered event is de-duplicated by JetStream (`Nats-Msg-Id`) within the window and by the
worker's claim after. An event is acknowledged only once every invocation it causes is enqueued.

The platform's activation events (``activation.>``: every completion) are read only while a
trigger may want them, through a consumer of their own (`Dispatcher._follow_activations`).

Scheduled triggers (and event schedules) are fired by the `Scheduler` each dispatcher runs:
ticks come from the clock the settings name, and each tick is claimed once across dispatchers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import Counter
from datetime import datetime, timedelta
from typing import Any, Final

import orjson
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import BadRequestError, NotFoundError

from eventbus.backoff import Backoff
from eventbus.codec import from_nats, to_structured_json
from eventbus.connection import Bus
from eventbus.consume import Puller
from eventbus.credentials import BusAuth
from eventbus.dispatch_state import KnownState
from eventbus.errors import InvalidEventError
from eventbus.filters import FilterIndex
from eventbus.firing import Firing
from eventbus.loop import freeze_startup
from eventbus.namespaces import event_namespace, namespace_of
from eventbus.publish import publish_event
from eventbus.scheduler import (
    EMIT_PREFIX,
    EventSchedule,
    Scheduled,
    Scheduler,
    emitted_event,
    tick_event,
)
from eventbus.schedules import Clock, SystemClock
from eventbus.streams import ensure_layout
from eventbus.subjects import (
    ACTIVATION_ROOT,
    ALL_ACTIVATION_EVENTS,
    ALL_EVENTS,
    DISPATCHER_STATS,
)
from eventbus.triggers import Trigger, storage_object
from eventbus.types import EVENTS_STREAM

log = logging.getLogger(__name__)
DURABLE: Final = "dispatcher"
#: the consumer of the activation events, there only while a trigger may want them
ACTIVATIONS_DURABLE: Final = "dispatcher-activations"
#: how much earlier than a trigger's `activations_since` (the gateway's clock) an activation
#: event may have been stored (the server's clock) and still fire it
CLOCK_MARGIN_S: Final = 1.0
#: how often a dispatcher that reads activation events checks that their consumer is there
#: (another dispatcher that saw the last such trigger go may have deleted it)
FOLLOW_CHECK_S: Final = 5.0
ACTIVATION_SUBJECTS: Final = f"{ACTIVATION_ROOT}."
#: how long a dispatch loop waits after a batch failed before it reads on
RETRY_PAUSE_S: Final = 0.5
STATS_SUBJECT: Final = DISPATCHER_STATS
#: how long a fetch waits for events when none is held
FETCH_WAIT_S: Final = 1.0
#: how long events that no trigger wants may wait for the trigger index's freshness check
#: (`KnownState.catch_up_triggers`, one JetStream request): one check for all those fetched
#: meanwhile
HOLD_S: Final = 0.05
#: a hold with less left than this is over (a fetch asks for at least a millisecond)
MIN_WAIT_S: Final = 0.001


class Dispatcher:
    """Turns events into invocations of the functions whose triggers match them."""

    def __init__(
        self,
        bus: Bus,
        *,
        ack_wait: float = 30,
        batch: int = 256,
        retry_base: float = 0.5,
        retry_max: float = 30.0,
        clock: Clock | None = None,
        schedule_grace_s: float = 30.0,
        schedule_poll_s: float = 0.5,
        hold_s: float = HOLD_S,
    ) -> None:
        self.bus = bus
        self.hold_s = hold_s
        self.ack_wait = ack_wait
        self.batch = batch
        self.backoff = Backoff(retry_base, retry_max)
        self.stats: Counter[str] = Counter()
        #: triggers (and their index), functions and event schedules, from KV
        self.known = KnownState(bus, self.stats)
        self.firing = Firing(bus, self.known, self.stats)
        self._activation_prefix = self.firing.activation_prefix
        self._tasks: list[asyncio.Task[None]] = []
        #: the consumers read, by durable name: `DURABLE`, and `ACTIVATIONS_DURABLE` when wanted
        self._pulls: dict[str, Puller] = {}
        self._stats_sub: Any = None
        self._stopping = asyncio.Event()
        #: batches being dispatched (a stop gives them a grace period)
        self._in_hand: set[asyncio.Future[list[None]]] = set()
        #: events held for the trigger index's freshness check (`_consume`), by consumer
        self._held: dict[str, list[Msg]] = {}
        self.scheduler = Scheduler(
            bus,
            clock or SystemClock(),
            self._scheduled,
            grace_s=schedule_grace_s,
            poll_s=schedule_poll_s,
        )

    @property
    def index(self) -> FilterIndex[str]:
        """Every trigger's filters, by trigger name."""
        return self.known.index

    @property
    def triggers(self) -> dict[str, Trigger]:
        """The triggers known, by name."""
        return self.known.triggers

    def counters(self) -> dict[str, int]:
        """Events seen, matched and unmatched, invocations enqueued, skips by reason, and more."""
        return dict(self.stats)

    async def start(self, *, sync_timeout: float = 10.0) -> None:
        """Load triggers and functions, then consume EVENTS with the durable `dispatcher`."""
        self._tasks, synced = self.known.watches()
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in synced)), sync_timeout)
        except BaseException:
            await self.stop()
            raise
        try:
            await self.bus.js.add_consumer(EVENTS_STREAM, self._consumer(DURABLE, ALL_EVENTS))
        except BadRequestError as exc:  # a field that cannot change: keep the consumer as it is
            log.warning("dispatcher consumer kept as it was: %s", exc)
        pull = self._pulls[DURABLE] = Puller(self.bus.nc, EVENTS_STREAM, DURABLE, batch=self.batch)
        await pull.start()
        self._stats_sub = await self.bus.nc.subscribe(STATS_SUBJECT, cb=self._on_stats)
        self._tasks.append(asyncio.create_task(self._consume(pull, DURABLE), name="dispatch"))
        self._tasks.append(asyncio.create_task(self._follow_activations(), name="activations"))
        self._tasks.append(asyncio.create_task(self.scheduler.run(), name="schedule"))
        log.info(
            "dispatcher started: %d triggers, %d functions",
            len(self.index),
            len(self.known.functions),
        )

    async def stop(self, *, grace: float = 5.0) -> None:
        """Stop consuming (the batch in hand gets ``grace`` seconds) and unsubscribe."""
        self._stopping.set()
        if self._in_hand:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(asyncio.gather(*self._in_hand)), grace)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for pull in list(self._pulls.values()):
            await pull.stop()
        self._pulls.clear()
        if self._stats_sub is not None:
            with contextlib.suppress(Exception):
                await self._stats_sub.unsubscribe()
        # Events held for the freshness check go back to the consumer at once, not after its
        # ack wait; once unsubscribed, so that the server does not hand them to a pull request
        # of this dispatcher's that is still open.
        held = [msg for msgs in self._held.values() for msg in msgs]
        self._held.clear()
        with contextlib.suppress(Exception):
            await asyncio.gather(*(msg.nak() for msg in held))

    # -- schedules -------------------------------------------------------------------------

    def _scheduled(self) -> list[Scheduled]:
        """What the scheduler fires: scheduled triggers, then event schedules."""
        found = []
        for trigger in list(self.triggers.values()):
            schedule, created = trigger.schedule, trigger.created
            if schedule is not None and created is not None:
                fire = functools.partial(self._fire_tick, trigger)
                found.append(Scheduled(trigger.name, schedule, created, trigger.enabled, fire))
        for name, emit in list(self.known.event_schedules.items()):
            fire = functools.partial(self._emit_tick, emit)
            found.append(Scheduled(EMIT_PREFIX + name, emit.schedule, emit.created, True, fire))
        return found

    async def _fire_tick(self, trigger: Trigger, tick: datetime) -> None:
        payload = trigger.schedule.payload if trigger.schedule else {}
        event = tick_event(self.bus, trigger.name, tick, payload)
        self.stats["schedule_ticks"] += 1
        await self.firing.fire(event, to_structured_json(event), None, trigger)

    async def _emit_tick(self, emit: EventSchedule, tick: datetime) -> None:
        self.stats["schedule_events"] += 1
        await publish_event(self.bus, emitted_event(emit, tick))

    # -- events --------------------------------------------------------------------------

    async def _follow_activations(self) -> None:
        """Read the activation events while a trigger may want them (its filters admit a type
        under ``<prefix>.activation.``), through a consumer made for them then and deleted
        when no trigger wants them any more.

        Nearly every activation ends with a completion event, and almost none is wanted: read
        and acked by the dispatcher, each cost a sync call about a seventh of its CPU. NATS
        filters name subjects to take, never ones to leave out, so these events have a root of
        their own (`eventbus.subjects.ACTIVATION_ROOT`). A trigger fires for the activation events
        stored since it began to want them (`Trigger.activations_since`, set by the store, less
        `CLOCK_MARGIN_S`), whether or not their consumer was there then: the consumer starts at
        the earliest such time, and `_handle` leaves out the triggers that began later. A
        consumer another dispatcher deleted meanwhile (its view of the triggers behind this
        one's) is made again from there; what is read twice is de-duplicated as a redelivery.
        """
        reading: asyncio.Task[None] | None = None
        present: bool | None = None  # whether the consumer is there, as far as known
        loop = asyncio.get_running_loop()
        checked = 0.0
        try:
            while not self._stopping.is_set():
                self.known.triggers_changed.clear()
                wanted = self.index.might_match_prefix(self._activation_prefix)
                if reading is not None and reading.done():  # it failed: read again
                    if not reading.cancelled() and reading.exception() is not None:
                        log.error("reading activation events failed: %r", reading.exception())
                    await self._stop_reading(reading)
                    reading = None
                try:
                    if wanted and (reading is None or loop.time() - checked >= FOLLOW_CHECK_S):
                        checked = loop.time()
                        await self._ensure_activations_consumer()
                        present = True
                        if reading is None:
                            pull = Puller(
                                self.bus.nc, EVENTS_STREAM, ACTIVATIONS_DURABLE, batch=self.batch
                            )
                            self._pulls[ACTIVATIONS_DURABLE] = pull
                            await pull.start()
                            reading = asyncio.create_task(
                                self._consume(pull, ACTIVATIONS_DURABLE),
                                name="dispatch-activations",
                            )
                            log.info("reading activation events: a trigger wants them")
                    elif not wanted and (reading is not None or present is not False):
                        # only on a fresh index: a stale one may not know the trigger that
                        # wants them (another dispatcher would make the consumer again)
                        caught_up = await self.known.catch_up_triggers()
                        if caught_up and not self.index.might_match_prefix(self._activation_prefix):
                            await self._stop_reading(reading)
                            reading = None
                            with contextlib.suppress(NotFoundError):
                                await self.bus.js.delete_consumer(
                                    EVENTS_STREAM, ACTIVATIONS_DURABLE
                                )
                            present = False
                        elif not caught_up:
                            await asyncio.sleep(0.5)
                        continue
                except Exception as exc:  # the bus recovering: the next turn tries again
                    log.warning("activation events' consumer: %s; trying again", exc)
                    await asyncio.sleep(0.5)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.known.triggers_changed.wait(), FOLLOW_CHECK_S)
        finally:
            await self._stop_reading(reading)

    async def _stop_reading(self, reading: asyncio.Task[None] | None) -> None:
        if reading is not None:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
        pull = self._pulls.pop(ACTIVATIONS_DURABLE, None)
        if pull is not None:
            await pull.stop()
        held = self._held.pop(ACTIVATIONS_DURABLE, [])
        with contextlib.suppress(Exception):
            await asyncio.gather(*(msg.nak() for msg in held))

    async def _ensure_activations_consumer(self) -> None:
        """Make the activation events' consumer if it is not there."""
        with contextlib.suppress(NotFoundError):
            await self.bus.js.consumer_info(EVENTS_STREAM, ACTIVATIONS_DURABLE)
            return
        await self.known.catch_up_triggers()  # a start from the triggers as they are now
        wanting = self.index.keys_matching_prefix(self._activation_prefix)
        since = [
            self.triggers[n].activations_since if n in self.triggers else None for n in wanting
        ]
        config = self._consumer(ACTIVATIONS_DURABLE, ALL_ACTIVATION_EVENTS)
        # from the earliest trigger's start, or all (a trigger stored before it was recorded:
        # there are activation events here only since that version)
        if since and None not in since:
            config.deliver_policy = DeliverPolicy.BY_START_TIME
            config.opt_start_time = min(t for t in since if t is not None) - timedelta(
                seconds=CLOCK_MARGIN_S
            )
        with contextlib.suppress(BadRequestError):  # made by another dispatcher just now
            await self.bus.js.add_consumer(EVENTS_STREAM, config)

    def _consumer(self, name: str, subject: str) -> ConsumerConfig:
        """A dispatcher's durable consumer of ``subject`` on EVENTS, from the start."""
        return ConsumerConfig(
            durable_name=name,
            filter_subject=subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            max_deliver=-1,
            max_ack_pending=max(1000, self.batch * 4),
        )

    async def _consume(self, pull: Puller, name: str) -> None:
        loop = asyncio.get_running_loop()
        # fetched events that no trigger wants, by the index as it stands
        held = self._held.setdefault(name, [])
        due = 0.0
        while not self._stopping.is_set():
            wait = due - loop.time() if held else FETCH_WAIT_S
            if wait > MIN_WAIT_S:
                fetched = await pull.take(self.batch - len(held), timeout=wait)
                if fetched and not held:
                    due = loop.time() + self.hold_s
                held.extend(fetched)
                if not held or (
                    len(held) < self.batch
                    and loop.time() < due
                    and all(self._looks_unwanted(msg) for msg in fetched)
                ):
                    # Such events' freshness check (a JetStream request) waits a moment
                    # to serve all those fetched meanwhile; any other event ends the wait.
                    continue
            await self.known.catch_up_triggers()
            msgs = held[:]
            held.clear()
            try:
                await self._dispatch(msgs)
            except Exception as exc:  # an ack on a lost connection: what is unacked comes back
                log.warning("dispatching %d events failed (%r); they come back", len(msgs), exc)
                await asyncio.sleep(RETRY_PAUSE_S)

    async def _dispatch(self, msgs: list[Msg]) -> None:
        # Events no trigger can want (most, where triggers are few) are acked here, in this
        # task, their acks in one write; only the others get a task each.
        wanted = []
        for msg in msgs:
            if self._unwanted(msg):
                await msg.ack()
            else:
                wanted.append(msg)
        if not wanted:
            return
        in_hand = asyncio.gather(*(self._handle(msg) for msg in wanted))
        self._in_hand.add(in_hand)
        try:
            await in_hand
        finally:
            self._in_hand.discard(in_hand)

    def _looks_unwanted(self, msg: Msg) -> bool:
        """Whether the event's type alone shows that no trigger in the index matches it."""
        raw_type = (msg.headers or {}).get("ce-type")
        return bool(
            raw_type and not _needs_decoding(raw_type) and not self.index.might_match_type(raw_type)
        )

    def _unwanted(self, msg: Msg) -> bool:
        """Counts the event as seen; whether its type alone shows that no trigger matches it."""
        self.stats["events_seen"] += 1
        if self._looks_unwanted(msg):
            self.stats["events_unmatched"] += 1
            return True
        return False

    async def _handle(self, msg: Msg) -> None:
        try:
            event = from_nats(msg.headers, msg.data)
            event_json = to_structured_json(event)
        except InvalidEventError as exc:
            log.warning("dropping an invalid event on %s: %s", msg.subject, exc)
            self.stats["events_invalid"] += 1
            await msg.term()
            return
        names = self.index.match(event)
        if names:
            namespace = event_namespace(event.extensions)
            names = {n for n in names if namespace_of(n) == namespace}
        if names and msg.subject.startswith(ACTIVATION_SUBJECTS):
            names = self._wanting_since(names, msg.metadata.timestamp)
        if not names:
            self.stats["events_unmatched"] += 1
            await msg.ack()
            return
        self.stats["events_matched"] += 1
        obj = storage_object(event)
        fired = [self.firing.fire(event, event_json, obj, self.triggers[n]) for n in sorted(names)]
        results = await asyncio.gather(*fired, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            attempt = msg.metadata.num_delivered or 1
            delay = self.backoff.delay(attempt)
            log.warning(
                "event %s: %d of %d enqueues failed (%s); retrying in %.1f s",
                event.id,
                len(failed),
                len(results),
                failed[0],
                delay,
            )
            self.stats["events_retried"] += 1
            await msg.nak(delay=delay)
            return
        await msg.ack()

    def _wanting_since(self, names: set[str], stored: datetime) -> set[str]:
        """The triggers that wanted activation events when this one was stored."""
        kept = set()
        for name in names:
            since = self.triggers[name].activations_since
            if since is None or stored >= since - timedelta(seconds=CLOCK_MARGIN_S):
                kept.add(name)
        return kept

    async def _on_stats(self, msg: Msg) -> None:
        if msg.reply:
            await msg.respond(orjson.dumps(self.counters()))


def _needs_decoding(value: str) -> bool:
    return "%" in value or '"' in value or " " in value or "\t" in value


async def run_dispatcher(
    url: str,
    *,
    prefix: str,
    ack_wait: float = 30.0,
    freeze_gc: bool = False,
    auth: BusAuth | None = None,
    clock: Clock | None = None,
    schedule_grace_s: float = 30.0,
) -> None:
    """Connect, declare the layout and dispatch (and fire schedules) until cancelled.

    ``freeze_gc`` moves what is loaded at start, the trigger index above all, out of the
    garbage collector's full passes (`eventbus.loop.freeze_startup`): with 10,000 triggers
    those passes cost about a fifth of the dispatch rate (see `bench/dispatch_bench.py`).
    """
    bus = await Bus.connect(url, name="dispatcher", prefix=prefix, auth=auth)
    await ensure_layout(bus.js)
    dispatcher = Dispatcher(bus, ack_wait=ack_wait, clock=clock, schedule_grace_s=schedule_grace_s)
    await dispatcher.start()
    if freeze_gc:
        freeze_startup()
    try:
        await asyncio.Event().wait()
    finally:
        await dispatcher.stop()
        await bus.close()
