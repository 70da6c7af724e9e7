"""The activation claim against a real nats-server: one run completes an activation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from eventbus.connection import Bus
from eventbus.errors import NotFoundError
from eventbus.streams import ensure_layout
from runtimes.activations import ActivationStore, AlreadyDone, Busy, Claimed, LostClaimError
from runtimes.types import ActivationRecord, ActivationStatus


@pytest.fixture
async def store(nats_url: str) -> AsyncIterator[ActivationStore]:
    bus = await Bus.connect(nats_url, name="test")
    await ensure_layout(bus.js)
    yield ActivationStore(bus)
    await bus.close()


def running(activation_id: str, worker: str = "w1") -> ActivationRecord:
    return ActivationRecord(
        id=activation_id,
        function="f",
        version=1,
        status=ActivationStatus.RUNNING,
        mode="async",
        start=datetime.now(UTC),
        worker=worker,
    )


async def test_first_claim_wins_and_a_live_lease_makes_others_wait(store: ActivationStore) -> None:
    first = await store.claim(running("a1"), lease=30)
    assert isinstance(first, Claimed) and first.record.attempts == 1
    second = await store.claim(running("a1", "w2"), lease=30)
    assert isinstance(second, Busy) and 29 < second.retry_after <= 30
    assert (await store.get("a1")).worker == "w1"


async def test_a_finished_activation_is_never_claimed_again(store: ActivationStore) -> None:
    claim = await store.claim(running("a2"), lease=30)
    assert isinstance(claim, Claimed)
    done = claim.record.model_copy(update={"status": ActivationStatus.SUCCESS, "result": 42})
    await store.finish(claim, done)
    again = await store.claim(running("a2", "w2"), lease=30)
    assert isinstance(again, AlreadyDone) and again.record.result == 42


async def test_an_expired_lease_is_taken_over_and_the_old_run_loses(store: ActivationStore) -> None:
    old = await store.claim(running("a3"), lease=0.2)
    assert isinstance(old, Claimed)
    await asyncio.sleep(0.3)
    new = await store.claim(running("a3", "w2"), lease=30)
    assert isinstance(new, Claimed) and new.record.attempts == 2
    with pytest.raises(LostClaimError):
        await store.finish(old, old.record.model_copy(update={"status": ActivationStatus.SUCCESS}))
    with pytest.raises(LostClaimError):
        await store.renew(old, lease=30)
    await store.finish(new, new.record.model_copy(update={"status": ActivationStatus.SUCCESS}))
    assert (await store.get("a3")).worker == "w2"


async def test_concurrent_claims_have_exactly_one_winner(store: ActivationStore) -> None:
    results = await asyncio.gather(
        *(store.claim(running("a4", f"w{i}"), lease=30) for i in range(8))
    )
    assert sum(isinstance(r, Claimed) for r in results) == 1


async def test_recent_lists_newest_first_and_filters(store: ActivationStore) -> None:
    for i in range(5):
        record = running(f"r{i}").model_copy(update={"function": "g" if i % 2 else "f"})
        await store.put(record)
    listed = await store.recent(limit=10, function="g")
    assert [r.id for r in listed][:2] == ["r3", "r1"]
    with pytest.raises(NotFoundError):
        await store.get("nope")
