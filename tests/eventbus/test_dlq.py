"""Listing dead letters (`eventbus.dlq`) against a real nats-server."""

from __future__ import annotations

import asyncio
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


async def _letters(bus: Bus, target: str, count: int, tag: str = "") -> None:
    await asyncio.gather(
        *(
            dead_letter(
                bus,
                kind="invoke",
                target=target,
                event=CloudEvent.create(id=f"{target}-{tag}{i}", type="t", source="/s", data={}),
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
    assert [d.event["id"] for d in mine] == ["team-a=fn-2", "team-a=fn-1", "team-a=fn-0"]
    assert [d.event["id"] for d in one] == ["team-a=fn-2", "team-a=fn-1"]
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


@pytest.mark.parametrize("name", ["*", ">", "a.b", "a b", "fn\n", "x" * 300, "a=b=c"])
async def test_a_name_that_cannot_exist_has_no_letters(bus: Bus, name: str) -> None:
    await _letters(bus, "fn", 1)
    assert await list_dead_letters(bus, target=name) == []
    assert await list_dead_letters(bus, namespace=name) == []
