"""Outputs and completion events of an activation belong to the function's namespace."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from nats.js.errors import NotFoundError as JsNotFoundError

from eventbus.buckets import BucketOwners
from eventbus.connection import Bus
from eventbus.errors import BucketAccessError
from eventbus.invocations import new_invocation
from eventbus.storage import LocalStorage
from eventbus.streams import ensure_layout
from runtimes.types import ActivationRecord, ActivationStatus
from runtimes.worker.results import completion_event, output_target, write_output


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    connected = await Bus.connect(nats_url, name="test-results")
    with contextlib.suppress(JsNotFoundError):
        await connected.js.delete_stream("KV_buckets")
    await ensure_layout(connected.js)
    yield connected
    await connected.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LocalStorage]:
    local = LocalStorage(tmp_path)
    yield local
    await local.close()


def test_the_output_target_names_the_function_namespace(bus: Bus) -> None:
    extra = {"trigger": "team-b=t", "outbucket": "b-out", "outkey": "k.json"}
    invocation = new_invocation(bus, "team-b=fn", b"{}", source="/t", extra=extra)
    assert output_target(invocation) == {"bucket": "b-out", "key": "k.json", "namespace": "team-b"}
    bare = new_invocation(bus, "fn", b"{}", source="/t", extra={**extra, "trigger": "t"})
    assert output_target(bare) == {"bucket": "b-out", "key": "k.json", "namespace": "default"}


async def test_an_output_goes_only_to_a_bucket_of_the_namespace(
    bus: Bus, store: LocalStorage
) -> None:
    owners = BucketOwners(bus)
    await owners.claim("b-out", "team-b")
    target = {"bucket": "b-out", "key": "r.json", "namespace": "team-b"}
    written = await write_output(bus, store, target, {"ok": 1}, announce=False)
    assert written["bucket"] == "b-out" and written["size"] == len(b'{"ok":1}')
    # default's bucket (no record), and another namespace's: refused, nothing written
    await store.create_bucket("dflt-out")
    for bucket in ("dflt-out", "b-out"):
        namespace = "team-c" if bucket == "b-out" else "team-b"
        foreign = {"bucket": bucket, "key": "x.json", "namespace": namespace}
        with pytest.raises(BucketAccessError, match="does not own output bucket"):
            await write_output(bus, store, foreign, {"x": 1}, announce=False, owners=owners)
    assert (await store.list("dflt-out")).objects == ()
    # default writes its own (unrecorded) bucket, made on the first output as before
    mine = {"bucket": "dflt-new", "key": "y.json", "namespace": "default"}
    assert (await write_output(bus, store, mine, b"\x89PNG\r\n\x1a\n", announce=False))["key"]


def test_a_completion_event_carries_the_function_namespace(bus: Bus) -> None:
    now = datetime.now(UTC)
    record = ActivationRecord(
        id="a" * 32,
        function="team-b=fn",
        version=1,
        status=ActivationStatus.SUCCESS,
        mode="async",
        start=now,
        end=now,
    )
    event = completion_event(bus, record)
    assert event.extensions == {"namespace": "team-b"}
    assert event.source == "/functions/team-b=fn"
