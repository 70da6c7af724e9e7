"""Bucket owners against a real nats-server: claims, races, the watched cache."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.js.errors import NotFoundError as JsNotFoundError

from eventbus.buckets import BucketOwners, BucketTakenError
from eventbus.connection import Bus
from eventbus.errors import ConflictError
from eventbus.storage import LocalStorage
from eventbus.streams import ensure_layout
from tests.support import eventually


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    """A connection whose `buckets` KV starts empty for each test."""
    bus = await Bus.connect(nats_url, name="test")
    with contextlib.suppress(JsNotFoundError):
        await bus.js.delete_stream("KV_buckets")
    await ensure_layout(bus.js)
    yield bus
    await bus.close()


async def test_a_bucket_without_record_belongs_to_default(bus: Bus) -> None:
    owners = BucketOwners(bus)
    assert await owners.owner("made-before") == "default"
    assert await owners.owns("made-before", "default")
    assert not await owners.owns("made-before", "tenant-b")


async def test_claim_release_and_reclaim(bus: Bus) -> None:
    owners = BucketOwners(bus)
    assert await owners.claim("b-data", "tenant-b") is True
    assert await owners.owner("b-data") == "tenant-b"
    assert await owners.claim("b-data", "tenant-b") is False  # already its own
    with pytest.raises(BucketTakenError) as taken:
        await owners.claim("b-data", "default")
    assert isinstance(taken.value, ConflictError) and taken.value.code == "conflict"
    await owners.release("b-data")
    assert await owners.owner("b-data") == "default"
    assert await owners.claim("b-data", "other") is True  # a released name is free again
    assert await owners.owner("b-data") == "other"


async def test_two_claims_of_one_name_exactly_one_wins(bus: Bus, nats_url: str) -> None:
    second = await Bus.connect(nats_url, name="test-2")
    try:
        for round_ in range(10):
            name = f"race-{round_}"
            if round_ % 2:  # also race on a released (tombstoned) record
                await BucketOwners(bus).claim(name, "x")
                await BucketOwners(bus).release(name)
            results = await asyncio.gather(
                BucketOwners(bus).claim(name, "tenant-a"),
                BucketOwners(second).claim(name, "tenant-b"),
                return_exceptions=True,
            )
            won = [r for r in results if r is True]
            lost = [r for r in results if isinstance(r, BucketTakenError)]
            assert len(won) == 1 and len(lost) == 1, results
            winner = "tenant-a" if results[0] is True else "tenant-b"
            assert await BucketOwners(second).owner(name) == winner
    finally:
        await second.close()


async def test_the_watch_keeps_every_process_current(bus: Bus, nats_url: str) -> None:
    await BucketOwners(bus).claim("early", "tenant-a")
    watched = BucketOwners(bus)
    await watched.start()
    try:
        assert watched._watching  # the initial values arrived
        assert await watched.owner("early") == "tenant-a"
        other = await Bus.connect(nats_url, name="writer")
        try:
            writer = BucketOwners(other)
            await writer.claim("late", "tenant-c")

            async def sees_late() -> bool:
                return await watched.owner("late") == "tenant-c"

            await eventually(sees_late)
            await writer.release("early")

            async def early_gone() -> bool:
                return await watched.owner("early") == "default"

            await eventually(early_gone)
        finally:
            await other.close()
    finally:
        await watched.stop()


async def test_a_watch_on_an_empty_bucket_is_ready(bus: Bus) -> None:
    watched = BucketOwners(bus)
    await watched.start()
    try:
        assert watched._watching
        assert await watched.owner("nothing") == "default"
    finally:
        await watched.stop()


async def test_ensure_writable_follows_records_and_the_store(bus: Bus, tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    owners = BucketOwners(bus)
    await store.create_bucket("old-default")  # made before owners existed: default's
    assert await owners.ensure_writable("old-default", "default", store) is False
    with pytest.raises(BucketTakenError):
        await owners.ensure_writable("old-default", "tenant-b", store)
    assert await owners.ensure_writable("fresh", "tenant-b", store) is True  # nobody's: claimed
    assert await owners.owner("fresh") == "tenant-b"
    assert await owners.ensure_writable("fresh", "tenant-b", store) is False
    with pytest.raises(BucketTakenError):
        await owners.ensure_writable("fresh", "default", store)
    assert await owners.ensure_writable("for-default", "default", store) is True
    with pytest.raises(BucketTakenError):  # claimed by default before it exists
        await owners.ensure_writable("for-default", "tenant-b", store)
    await store.close()
