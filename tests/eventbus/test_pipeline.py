"""Pipelined JetStream publishes against a real nats-server: acks, errors, timeouts, de-dup."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.errors import BadHeaderError, BadSubjectError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import APIError, NoStreamResponseError

from eventbus.connection import Bus
from eventbus.pipeline import Pipeline
from eventbus.publish import publish_event
from eventbus.server import EmbeddedNats
from eventbus.types import CloudEvent


async def stream(nc: Any, name: str) -> Any:
    """A fresh stream on ``<name>.>`` for one test."""
    js = nc.jetstream()
    await js.add_stream(name=name, subjects=[f"{name}.>"])
    return js


async def test_many_concurrent_publishes_are_all_acked_in_order(nc: Any) -> None:
    js = await stream(nc, "pipe_many")
    pipeline = Pipeline(nc)
    acks = await asyncio.gather(
        *(pipeline.publish(f"pipe_many.{i}", str(i).encode()) for i in range(500))
    )
    assert [ack.seq for ack in acks] == list(range(1, 501))
    assert {ack.stream for ack in acks} == {"pipe_many"}
    assert pipeline.in_flight == 0
    info = await js.stream_info("pipe_many")
    assert info.state.messages == 500
    assert (await js.get_msg("pipe_many", 321)).data == b"320"


async def test_a_wrong_last_sequence_fails_only_that_write(nc: Any) -> None:
    js = nc.jetstream()
    kv = await js.create_key_value(bucket="pipe_cas")
    taken = await kv.put("taken", b"first")
    pipeline = Pipeline(nc)
    created = await asyncio.gather(
        *(pipeline.kv_write(kv, f"k{i}", b"v", last=None) for i in range(50)),
        pipeline.kv_write(kv, "taken", b"second", last=None),
        pipeline.kv_write(kv, "taken", b"stale", last=taken + 100),
    )
    assert all(isinstance(revision, int) for revision in created[:50])
    assert created[50:] == [None, None]
    assert (await kv.get("taken")).value == b"first"
    # an update at the entry's revision lands; the same one again lost the race
    assert await pipeline.kv_write(kv, "k0", b"w", last=created[0]) is not None
    assert await pipeline.kv_write(kv, "k0", b"x", last=created[0]) is None
    assert (await kv.get("k0")).value == b"w"


async def test_a_deleted_key_can_be_created_again(nc: Any) -> None:
    kv = await nc.jetstream().create_key_value(bucket="pipe_tomb")
    await kv.put("gone", b"old")
    await kv.delete("gone")
    pipeline = Pipeline(nc)
    assert await pipeline.kv_write(kv, "gone", b"new", last=None) is not None
    assert (await kv.get("gone")).value == b"new"
    assert await pipeline.kv_write(kv, "gone", b"newer", last=None) is None


async def test_errors_are_those_js_publish_raises(nc: Any) -> None:
    js = await stream(nc, "pipe_err")
    pipeline = Pipeline(nc)
    with pytest.raises(NoStreamResponseError):
        await pipeline.publish("nobody.listens", b"x")
    with pytest.raises(NoStreamResponseError):
        await js.publish("nobody.listens", b"x")
    await js.publish("pipe_err.a", b"x")
    wrong = {"Nats-Expected-Last-Subject-Sequence": "7"}
    with pytest.raises(APIError) as ours:
        await pipeline.publish("pipe_err.a", b"y", headers=wrong)
    with pytest.raises(APIError) as theirs:
        await js.publish("pipe_err.a", b"y", headers=wrong)
    assert type(ours.value) is type(theirs.value)
    assert ours.value.err_code == theirs.value.err_code == 10071
    # the failures left the pipeline working
    assert (await pipeline.publish("pipe_err.b", b"z")).seq == 2


async def test_headers_arrive_as_nats_py_sends_them(nc: Any) -> None:
    js = await stream(nc, "pipe_hdr")
    pipeline = Pipeline(nc)
    cases = [
        {"ce-id": "a", "ce-type": "t", "X-Pad": "  spaced  "},
        {"ce-id": "b", "X-Break": "one\r\ntwo\nthree"},  # rewritten, never a second header
        {"ce-id": "c", " X-Key ": "v", "": "dropped"},
    ]
    for n, headers in enumerate(cases):
        ours = await pipeline.publish("pipe_hdr.ours", b"x", headers=dict(headers))
        theirs = await js.publish("pipe_hdr.theirs", b"x", headers=dict(headers))
        got = (await js.get_msg("pipe_hdr", ours.seq)).headers
        want = (await js.get_msg("pipe_hdr", theirs.seq)).headers
        assert got == want, n
    with pytest.raises(BadHeaderError):
        await pipeline.publish("pipe_hdr.ours", b"x", headers={"bad key": "v"})
    with pytest.raises(BadSubjectError):
        await pipeline.publish("pipe_hdr.a b", b"x", headers={"ce-id": "d"})
    assert pipeline.in_flight == 0


async def test_a_republished_event_id_is_a_duplicate(nc: Any) -> None:
    js = await stream(nc, "pipe_dup")
    bus = Bus(nc, "io.test")
    event = CloudEvent.create(type="io.test.thing", source="/test", data={"n": 1})
    first = await publish_event(bus, event, subject="pipe_dup.e")
    again = await publish_event(bus, event, subject="pipe_dup.e")
    other = await publish_event(bus, event, subject="pipe_dup.e", msg_id=f"{event.id}-2")
    assert not first.duplicate and again.duplicate and not other.duplicate
    assert again.seq == first.seq
    assert (await js.stream_info("pipe_dup")).state.messages == 2


async def test_a_stopped_server_times_out_each_pending_publish(tmp_path: Path) -> None:
    server = EmbeddedNats(store_dir=tmp_path / "nats").start()
    conn = await nats.connect(server.admin_url, max_reconnect_attempts=-1)
    try:
        js = await stream(conn, "pipe_gone")
        pipeline = Pipeline(conn, timeout=0.5)
        assert (await pipeline.publish("pipe_gone.a", b"x")).seq == 1
        server.stop(kill=True)
        for _ in range(200):  # until the client noticed (a poll, not a fixed sleep)
            if not conn.is_connected:
                break
            await asyncio.sleep(0.05)
        results = await asyncio.gather(
            *(pipeline.publish(f"pipe_gone.{i}", b"y") for i in range(20)),
            return_exceptions=True,
        )
        assert all(isinstance(result, NatsTimeoutError) for result in results), results
        assert pipeline.in_flight == 0
        with pytest.raises(NatsTimeoutError):
            await js.publish("pipe_gone.b", b"y", timeout=0.5)  # as js.publish says it
    finally:
        with contextlib.suppress(ConnectionError):  # nats-py's close flushes to a dead socket
            await conn.close()
        server.stop(kill=True)
