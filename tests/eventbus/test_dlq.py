"""Listing dead letters (`eventbus.dlq`) against a real nats-server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from eventbus.connection import Bus
from eventbus.dlq import DeadLetter, dead_letter, list_dead_letters
from eventbus.streams import ensure_layout
from eventbus.types import DLQ_STREAM, CloudEvent


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    bus = await Bus.connect(nats_url, name="dlq-test", prefix="io.test")
    await ensure_layout(bus.js)
    await bus.js.purge_stream(DLQ_STREAM)
    yield bus
    await bus.close()


async def _letters(bus: Bus, target: str, count: int) -> None:
    """``count`` letters for ``target`` (event ids ``<target>-<i>``, once per test: the
    stream's duplicate window outlives the purge between tests, so each test's are its own)."""
    tag = f"{uuid.uuid4().hex[:6]}-"
    await asyncio.gather(
        *(
            dead_letter(
                bus,
                kind="invoke",
                target=target,
                event=CloudEvent.create(id=f"{tag}{target}-{i}", type="t", source="/s", data={}),
                error="boom",
                attempts=3,
            )
            for i in range(count)
        )
    )


async def _reads(bus: Bus) -> list[Any]:
    """Every read of one stored message from now on (the newest-first walk reads one by one)."""
    seen: list[Any] = []

    async def add(msg: Any) -> None:
        seen.append(msg.subject)

    await bus.nc.subscribe(f"$JS.API.STREAM.MSG.GET.{DLQ_STREAM}", cb=add)
    await bus.nc.subscribe(f"$JS.API.DIRECT.GET.{DLQ_STREAM}.>", cb=add)
    await bus.nc.flush()
    return seen


async def test_one_namespaces_letters_are_read_without_walking_anothers(bus: Bus) -> None:
    """A tenant with many letters newer than another's costs the other's listing nothing:
    both its namespace's and one function's are read through a filtered consumer."""
    await _letters(bus, "team-a=fn", 3)
    await _letters(bus, "team-b=noisy", 600)
    reads = await _reads(bus)
    mine = await list_dead_letters(bus, namespace="team-a", limit=50)
    one = await list_dead_letters(bus, target="team-a=fn", namespace="team-a", limit=2)
    assert [d.event["id"][7:] for d in mine] == ["team-a=fn-2", "team-a=fn-1", "team-a=fn-0"]
    assert [d.event["id"][7:] for d in one] == ["team-a=fn-2", "team-a=fn-1"]
    assert all(d.seq > 0 and d.target == "team-a=fn" for d in mine)
    assert reads == []  # not one letter read one by one
    assert await list_dead_letters(bus, target="team-b=noisy", namespace="team-a") == []
    everyone = await list_dead_letters(bus, limit=5)  # the operator's: the newest of all
    assert [d.target for d in everyone] == ["team-b=noisy"] * 5


async def test_letters_stored_on_the_old_subjects_are_still_listed(bus: Bus) -> None:
    """Before subjects named the namespace, letters were on ``dlq.<kind>.<target>``."""
    old = DeadLetter(kind="invoke", target="team-a=old", event={"id": "e-old"}, error="x",
                     attempts=1, time="2026-11-01T00:00:00Z")  # fmt: skip
    other = old.model_copy(update={"target": "team-b=old", "event": {"id": "e-other"}})
    for letter in (old, other):
        await bus.js.publish(f"dlq.invoke.{letter.target}", letter.model_dump_json().encode())
    await _letters(bus, "team-a=new", 1)
    mine = await list_dead_letters(bus, namespace="team-a")
    assert [d.target for d in mine] == ["team-a=new", "team-a=old"]
    assert [d.target for d in await list_dead_letters(bus, target="team-b=old")] == ["team-b=old"]


async def test_an_empty_dead_letter_stream_lists_nothing(bus: Bus) -> None:
    assert await list_dead_letters(bus, namespace="team-a") == []
    assert await list_dead_letters(bus, target="fn") == []
    assert await list_dead_letters(bus) == []


@pytest.mark.parametrize("name", ["*", ">", "a.b", "a b", "fn\n", "x" * 300, "a=b=c", "a=>"])
async def test_a_name_that_cannot_exist_has_no_letters(bus: Bus, name: str) -> None:
    await _letters(bus, "fn", 1)
    assert await list_dead_letters(bus, target=name) == []
    assert await list_dead_letters(bus, namespace=name) == []


async def test_the_newest_of_many_come_first_and_odd_targets_are_found(bus: Bus) -> None:
    """A namespace with more letters than asked for: its newest, in order, from the last
    window; a subscription's id (capitals allowed) names its letters; a letter that is not one
    (a bad body on an old subject) hides no other."""
    await _letters(bus, "team-a=fn", 300)
    await _letters(bus, "team-a=MyHook-1", 2)
    await bus.js.publish("dlq.delivery.team-a=broken", b"not a letter")
    newest = await list_dead_letters(bus, namespace="team-a", limit=52)
    assert [d.target for d in newest[:2]] == ["team-a=MyHook-1"] * 2
    assert len(newest) == 52 and len({d.seq for d in newest}) == 52
    assert [d.seq for d in newest] == sorted((d.seq for d in newest), reverse=True)
    hooks = await list_dead_letters(bus, target="team-a=MyHook-1", namespace="team-a")
    assert {d.event["id"][7:] for d in hooks} == {"team-a=MyHook-1-0", "team-a=MyHook-1-1"}
    assert len(await list_dead_letters(bus, limit=500)) == 302  # the operator's too
