"""Counts of finished activations: kept where they finish, sent as one message a second.

The sender's test runs against a real nats-server; the message format's checks run on bytes
as a gateway receives them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson
import pytest

from eventbus.connection import Bus
from eventbus.subjects import CONTROL_METRICS
from runtimes.tally import (
    BUCKETS,
    MAX_FUNCTIONS,
    CompletionTally,
    TallySender,
    read_tally,
)
from runtimes.types import ActivationRecord, ActivationStatus


def record(
    function: str = "fn",
    status: ActivationStatus = ActivationStatus.SUCCESS,
    *,
    duration_ms: float | None = 2.0,
    wait_ms: float | None = 5.0,
    init_ms: float | None = None,
) -> ActivationRecord:
    return ActivationRecord(
        id=uuid.uuid4().hex,
        function=function,
        version=1,
        mode="sync",
        status=status,
        start=datetime.now(UTC),
        duration_ms=duration_ms,
        wait_ms=wait_ms,
        init_ms=init_ms,
        cold_start=init_ms is not None,
    )


def test_a_tally_counts_statuses_and_buckets_and_forgets_what_it_sent() -> None:
    tally = CompletionTally()
    assert not tally and tally.take() == []
    tally.add(record(duration_ms=2.0))  # 0.002 s: the bucket up to 0.0025
    tally.add(record(duration_ms=400_000.0, init_ms=120.0))  # past the last bound: +Inf
    tally.add(
        record(status=ActivationStatus.ERROR, duration_ms=None, wait_ms=-3.0)
    )  # clock skew: 0
    tally.add(record("tenant-b=other"))
    [body] = tally.take()
    assert not tally and tally.take() == []
    message = read_tally(body)
    assert message is not None
    fn = message.functions["fn"]
    assert fn.statuses == {"success": 2, "error": 1}
    assert fn.duration.count == 2 and fn.duration.total == pytest.approx(400.002)
    assert fn.duration.counts[BUCKETS.index(0.0025)] == 1
    assert fn.duration.counts[len(BUCKETS)] == 1
    # a bound is in its bucket (Prometheus's `le`); a negative wait counts as 0
    assert fn.wait.counts[BUCKETS.index(0.005)] == 2 and fn.wait.counts[0] == 1
    assert fn.cold_starts == 1 and fn.init.count == 1
    assert message.functions["tenant-b=other"].statuses == {"success": 1}


def test_many_functions_go_in_several_messages() -> None:
    tally = CompletionTally()
    for i in range(MAX_FUNCTIONS + 5):
        tally.add(record(f"fn{i}"))
    bodies = tally.take()
    assert len(bodies) == 2
    names: set[str] = set()
    for body in bodies:
        message = read_tally(body)
        assert message is not None
        names |= set(message.functions)
    assert len(names) == MAX_FUNCTIONS + 5


def valid() -> dict[str, object]:
    tally = CompletionTally()
    tally.add(record())
    data = orjson.loads(tally.take()[0])
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(functions={}),
        lambda d: d["functions"].update({"not a name!": d["functions"]["fn"]}),
        lambda d: d["functions"].update({"fn\n": d["functions"]["fn"]}),
        lambda d: d["functions"]["fn"]["duration"].update(counts=[1, 2]),
        lambda d: d["functions"]["fn"]["duration"].update(total=-1),
        lambda d: d["functions"]["fn"].update(cold_starts=-1),
        lambda d: d["functions"]["fn"].update(cold_starts=2**60),
        lambda d: d["functions"]["fn"]["statuses"].update(success="many"),
        lambda d: d["functions"].update({"": d["functions"]["fn"]}),
        lambda d: d["functions"].update({"x" * 300: d["functions"]["fn"]}),
    ],
)
def test_a_malformed_tally_is_dropped(change: object) -> None:
    data = valid()
    assert read_tally(orjson.dumps(data)) is not None
    change(data)  # type: ignore[operator]
    assert read_tally(orjson.dumps(data)) is None


def test_fields_of_a_later_version_are_ignored() -> None:
    """A gateway of this version still counts what a newer process sends (an upgrade)."""
    data = valid()
    data["added_later"] = 1
    data["functions"]["fn"]["also_later"] = {"x": 1}  # type: ignore[index]
    message = read_tally(orjson.dumps(data))
    assert message is not None and message.functions["fn"].statuses == {"success": 1}


def test_an_infinite_or_nan_time_keeps_the_message_valid() -> None:
    tally = CompletionTally()
    tally.add(record(duration_ms=float("inf"), wait_ms=float("nan")))
    [body] = tally.take()
    message = read_tally(body)
    assert message is not None
    fn = message.functions["fn"]
    assert fn.duration.counts[len(BUCKETS)] == 1 and fn.wait.counts[0] == 1


@pytest.mark.parametrize(
    "body", [b"", b"not json", b"[]", b'{"functions": null}', b'{"functions": {"fn": 1e999}}']
)
def test_bytes_that_are_no_tally_are_dropped(body: bytes) -> None:
    assert read_tally(body) is None


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    connected = await Bus.connect(nats_url, name="test-tally")
    yield connected
    await connected.close()


async def test_the_sender_sends_while_there_are_counts_and_the_rest_when_stopped(
    bus: Bus,
) -> None:
    heard: asyncio.Queue[bytes] = asyncio.Queue()

    async def hear(msg: object) -> None:
        await heard.put(msg.data)  # type: ignore[attr-defined]

    sub = await bus.nc.subscribe(CONTROL_METRICS, cb=hear)
    tally = CompletionTally()
    sender = TallySender(bus, tally, interval=0.05)
    sender.start()
    try:
        tally.add(record())
        tally.add(record())
        first = read_tally(await asyncio.wait_for(heard.get(), 5))
        assert first is not None and first.functions["fn"].statuses == {"success": 2}
        await asyncio.sleep(0.3)  # nothing counted: nothing sent
        assert heard.empty()
        await sender.stop()
        slow = TallySender(bus, tally, interval=3600)
        slow.start()
        tally.add(record(status=ActivationStatus.TIMEOUT))
        await slow.stop()  # what is left goes when stopped, not an interval later
        last = read_tally(await asyncio.wait_for(heard.get(), 5))
        assert last is not None and last.functions["fn"].statuses == {"timeout": 1}
    finally:
        await sender.stop()
        await sub.unsubscribe()
