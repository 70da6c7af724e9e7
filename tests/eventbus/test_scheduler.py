"""Schedules against a real nats-server: two dispatchers, a fake clock read from a file."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from nats.js.errors import NotFoundError as JsNotFoundError
from pydantic import ValidationError

from eventbus.codec import from_nats
from eventbus.connection import Bus
from eventbus.dispatcher import Dispatcher
from eventbus.kv import read
from eventbus.scheduler import FIRED_PREFIX, TickRecord
from eventbus.schedules import FileClock, Schedule, tick_id
from eventbus.streams import FUNCTIONS_KV, SCHEDULES_KV, ensure_layout
from eventbus.triggers import Trigger, TriggerStore, activation_id_for
from eventbus.types import INVOCATIONS_STREAM, CloudEvent
from tests.support import eventually

PREFIX = "io.deepfaas"
#: the fake clock sits a quarter second past each whole second; a tick is late past half a second
GRACE_S = 0.5


class FakeTime:
    """The file the dispatchers' `FileClock` reads; the test moves it."""

    def __init__(self, path: Path, start: datetime) -> None:
        self.path = path
        self.now = start
        self._write()

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        self._write()
        return self.now

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(self.now.isoformat())
        tmp.replace(self.path)  # readers never see a half-written file


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    bus = await Bus.connect(nats_url, name="test", prefix=PREFIX)
    for stream in (INVOCATIONS_STREAM, "KV_triggers", "KV_functions", f"KV_{SCHEDULES_KV}"):
        with contextlib.suppress(JsNotFoundError):
            await bus.js.delete_stream(stream)
    await ensure_layout(bus.js)
    # and empty: a CI run once found an earlier test's triggers and invocations here (not
    # reproduced since); whatever brought them back, each test starts with none
    for stream in (INVOCATIONS_STREAM, "KV_triggers", "KV_functions", f"KV_{SCHEDULES_KV}"):
        await bus.js.purge_stream(stream)
    await (await bus.kv(FUNCTIONS_KV)).put("tick", orjson.dumps({"name": "tick"}))
    yield bus
    await bus.close()


@pytest.fixture
def fake(tmp_path: Path) -> FakeTime:
    # a whole second of real time, so the trigger (created now) is armed at the fake time
    start = datetime.now(UTC).replace(microsecond=250_000) - timedelta(seconds=5)
    return FakeTime(tmp_path / "now", start)


@contextlib.asynccontextmanager
async def dispatchers(nats_url: str, fake: FakeTime, count: int) -> AsyncIterator[list[Dispatcher]]:
    """``count`` dispatchers, each with its own connection (as separate processes have)."""
    started: list[tuple[Bus, Dispatcher]] = []
    try:
        for _ in range(count):
            bus = await Bus.connect(nats_url, name="dispatcher", prefix=PREFIX)
            d = Dispatcher(
                bus, clock=FileClock(fake.path), schedule_grace_s=GRACE_S, schedule_poll_s=0.02
            )
            started.append((bus, d))
            await d.start()
        yield [d for _, d in started]
    finally:
        for bus, d in started:
            await d.stop()
            await bus.close()


async def invocations(bus: Bus) -> list[CloudEvent]:
    info = await bus.js.stream_info(INVOCATIONS_STREAM)
    found: list[CloudEvent] = []
    if not info.state.messages:
        return found
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        with contextlib.suppress(JsNotFoundError):
            msg = await bus.js.get_msg(INVOCATIONS_STREAM, seq)
            found.append(from_nats(dict(msg.headers or {}), msg.data or b""))
    return found


async def count_is(bus: Bus, n: int) -> list[CloudEvent]:
    async def reached() -> list[CloudEvent] | None:
        found = await invocations(bus)
        assert len(found) <= n, f"{len(found)} invocations, expected {n}"
        return found if len(found) == n else None

    found: list[CloudEvent] = await eventually(reached)
    return found


async def record(bus: Bus, owner: str) -> TickRecord | None:
    found = await read(await bus.kv(SCHEDULES_KV), FIRED_PREFIX + owner, TickRecord)
    return found[0] if found else None


def ticks_of(found: list[CloudEvent]) -> list[str]:
    return [orjson.loads(e.data or b"{}")["tick"] for e in found]


async def test_every_second_fires_once_per_tick_with_two_dispatchers(
    bus: Bus, nats_url: str, fake: FakeTime
) -> None:
    trigger = Trigger(
        name="every",
        function="tick",
        schedule=Schedule(interval_s=1, payload={"size": 3}),
        params={"model": "digits"},
    )
    await TriggerStore(bus).put(trigger, create_only=True)
    n = 5
    async with dispatchers(nats_url, fake, 2) as pair:
        await eventually(lambda: _armed(bus, "every"))
        expected = []
        for i in range(1, n + 1):
            expected.append(fake.advance(1).replace(microsecond=0).isoformat())
            found = await count_is(bus, i)
        # the pass after the last tick: nothing more is claimed
        await eventually(lambda: _settled(bus, "every", expected[-1]))
        fired = sum(d.scheduler.fired for d in pair)
        duplicates = sum(d.stats["invocations_duplicate"] for d in pair)
    assert ticks_of(found) == expected
    assert (fired, duplicates) == (n, 0)  # the claim, not JetStream's window, kept one per tick
    first = found[0]
    tick = datetime.fromisoformat(expected[0])
    assert first.id == activation_id_for(tick_id("every", tick), "every")
    assert first.source == "/triggers/every" and first.subject == "tick"
    body = orjson.loads(first.data or b"{}")
    assert (body["model"], body["size"]) == ("digits", 3)
    assert body["event"]["type"] == f"{PREFIX}.schedule.tick"
    assert body["event"]["time"].startswith(expected[0][:19])


@pytest.mark.parametrize("catch_up", ["once", "skip"])
async def test_a_restart_after_missed_ticks_catches_up_once_or_skips(
    bus: Bus, nats_url: str, fake: FakeTime, catch_up: str
) -> None:
    schedule = Schedule(interval_s=1, catch_up=catch_up)  # type: ignore[arg-type]
    await TriggerStore(bus).put(Trigger(name="nightly", function="tick", schedule=schedule))
    async with dispatchers(nats_url, fake, 1):
        await eventually(lambda: _armed(bus, "nightly"))
        before = fake.advance(1)
        await count_is(bus, 1)
    # the platform is down for a minute of fake time
    down_until = fake.advance(60.5)
    missed = down_until.replace(microsecond=0)
    async with dispatchers(nats_url, fake, 1):
        await eventually(lambda: _settled(bus, "nightly", missed.isoformat()))
        after = fake.advance(0.5)
        expected = [before, missed, after] if catch_up == "once" else [before, after]
        found = await count_is(bus, len(expected))
        await eventually(lambda: _settled(bus, "nightly", after.replace(microsecond=0).isoformat()))
    assert ticks_of(found) == [t.replace(microsecond=0).isoformat() for t in expected]
    assert len(await invocations(bus)) == len(expected)


async def test_a_disabled_trigger_claims_its_ticks_without_running(
    bus: Bus, nats_url: str, fake: FakeTime
) -> None:
    schedule = Schedule(interval_s=1)
    store = TriggerStore(bus)
    await store.put(Trigger(name="off", function="tick", schedule=schedule, enabled=False))
    async with dispatchers(nats_url, fake, 1) as (d,):
        await eventually(lambda: _armed(bus, "off"))
        tick = fake.advance(1).replace(microsecond=0)
        await eventually(lambda: _settled(bus, "off", tick.isoformat()))
        assert await invocations(bus) == []
        await store.set_enabled("off", True)
        # the next tick only once the dispatcher knows: else it is claimed as a disabled one
        await eventually(lambda: d.triggers["off"].enabled)
        nxt = fake.advance(1).replace(microsecond=0)
        found = await count_is(bus, 1)  # the disabled tick is not caught up
    assert ticks_of(found) == [nxt.isoformat()]
    await store.delete("off")
    assert await record(bus, "off") is None  # its record goes with it


async def _armed(bus: Bus, owner: str) -> bool:
    return await record(bus, owner) is not None


async def _settled(bus: Bus, owner: str, tick: str) -> bool:
    found = await record(bus, owner)
    return (
        found is not None
        and found.done
        and found.last is not None
        and (found.last.isoformat() == tick)
    )


def test_schedules_refuse_bad_cron_zone_and_interval() -> None:
    for bad, reason in [
        ({"cron": "61 * * * *"}, "invalid cron expression"),
        ({"cron": "* * *"}, "5 fields"),
        ({"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"interval_s": 0}, "greater than or equal to 1"),
        ({}, "exactly one of"),
        ({"cron": "0 3 * * *", "interval_s": 60}, "exactly one of"),
        (
            {"interval_s": 60, "start": "2030-01-02T00:00:00Z", "stop": "2030-01-01T00:00:00Z"},
            "stop",
        ),
    ]:
        with pytest.raises(ValidationError, match=reason):
            Schedule.model_validate(bad)


def test_next_fire_times_honour_the_zone_and_the_dates() -> None:
    now = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)
    madrid = Schedule(cron="0 3 * * *", timezone="Europe/Madrid")
    assert [t.isoformat() for t in madrid.upcoming(now, 2)] == [
        "2026-11-29T02:00:00+00:00",
        "2026-11-30T02:00:00+00:00",
    ]
    summer = Schedule(cron="0 3 * * *", timezone="Europe/Madrid").upcoming(
        datetime(2026, 7, 1, tzinfo=UTC), 1
    )
    assert summer[0].isoformat() == "2026-07-01T01:00:00+00:00"
    bounded = Schedule(
        interval_s=600,
        start=datetime(2026, 11, 28, 6, 5, tzinfo=UTC),
        stop=now + timedelta(minutes=30),
    )
    assert [t.minute for t in bounded.upcoming(now)] == [5, 15, 25]


async def test_a_tick_claimed_by_a_dispatcher_that_died_is_run_by_another(
    bus: Bus, nats_url: str, fake: FakeTime
) -> None:
    store = TriggerStore(bus)
    stored = await store.put(
        Trigger(name="orphan", function="tick", schedule=Schedule(interval_s=1))
    )
    assert stored.created is not None
    tick = fake.now.replace(microsecond=0)
    # a dispatcher claimed this tick a minute ago and died before enqueueing it
    pending = TickRecord(
        created=stored.created, since=tick - timedelta(seconds=5), last=tick, done=False,
        by="scheduler-gone", claimed=time.time() - 60,
    )  # fmt: skip
    kv = await bus.kv(SCHEDULES_KV)
    await kv.put(FIRED_PREFIX + "orphan", pending.model_dump_json().encode())
    async with dispatchers(nats_url, fake, 1):
        found = await count_is(bus, 1)
        await eventually(lambda: _settled(bus, "orphan", tick.isoformat()))
    assert ticks_of(found) == [tick.isoformat()]
    assert found[0].id == activation_id_for(tick_id("orphan", tick), "orphan")


async def test_a_changed_schedule_counts_at_once(bus: Bus, nats_url: str, fake: FakeTime) -> None:
    store = TriggerStore(bus)
    yearly = Schedule(cron="0 0 1 1 *")
    await store.put(Trigger(name="changes", function="tick", schedule=yearly))
    async with dispatchers(nats_url, fake, 1) as (d,):
        await eventually(lambda: _armed(bus, "changes"))
        await eventually(lambda: _passed(d))
        await store.put(Trigger(name="changes", function="tick", schedule=Schedule(interval_s=1)))
        await eventually(lambda: _knows_interval(d, "changes"))
        tick = fake.advance(1).replace(microsecond=0)
        found = await count_is(bus, 1)
    assert ticks_of(found) == [tick.isoformat()]


async def _passed(d: Dispatcher) -> bool:
    return bool(d.scheduler._next)


async def _knows_interval(d: Dispatcher, name: str) -> bool:
    schedule = d.triggers[name].schedule
    return schedule is not None and schedule.interval_s == 1
