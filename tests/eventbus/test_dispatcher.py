"""The trigger store and the dispatcher against a real nats-server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from nats.js.errors import NotFoundError as JsNotFoundError

from eventbus.codec import from_nats, to_nats
from eventbus.connection import Bus
from eventbus.dispatcher import ACTIVATIONS_DURABLE, CLOCK_MARGIN_S, STATS_SUBJECT, Dispatcher
from eventbus.dlq import list_dead_letters
from eventbus.errors import ConflictError, NotFoundError
from eventbus.publish import MSG_ID_HEADER, publish_event
from eventbus.streams import FUNCTIONS_KV, ensure_layout
from eventbus.triggers import OutputTarget, Trigger, TriggerStore, activation_id_for
from eventbus.types import DLQ_STREAM, EVENTS_STREAM, INVOCATIONS_STREAM, CloudEvent, new_id
from tests.support import eventually

PREFIX = "io.deepfaas"
CREATED = f"{PREFIX}.storage.object.created"
SKIPPED = f"{PREFIX}.trigger.skipped"


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    """A connection to a server whose streams and buckets start empty for each test."""
    bus = await Bus.connect(nats_url, name="test", prefix=PREFIX)
    for stream in (EVENTS_STREAM, INVOCATIONS_STREAM, DLQ_STREAM, "KV_triggers", "KV_functions"):
        with contextlib.suppress(JsNotFoundError):
            await bus.js.delete_stream(stream)
    await ensure_layout(bus.js)
    # and empty: a CI run once found an earlier test's triggers and invocations here (not
    # reproduced since); whatever brought them back, each test starts with none
    for stream in (EVENTS_STREAM, INVOCATIONS_STREAM, DLQ_STREAM, "KV_triggers", "KV_functions"):
        await bus.js.purge_stream(stream)
    yield bus
    await bus.close()


@pytest.fixture
async def dispatcher(bus: Bus) -> AsyncIterator[Dispatcher]:
    started = Dispatcher(bus, ack_wait=2, retry_base=0.05, retry_max=0.2)
    await started.start()
    yield started
    await started.stop()


async def add_function(bus: Bus, name: str) -> None:
    kv = await bus.kv(FUNCTIONS_KV)
    await kv.put(name, orjson.dumps({"name": name, "handler": "main"}))


async def stored(
    bus: Bus, stream: str, prefix: str = ""
) -> list[tuple[str, dict[str, str], bytes]]:
    """(subject, headers, body) of every message a stream holds, oldest first."""
    info = await bus.js.stream_info(stream)
    found = []
    if not info.state.messages:
        return found
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        with contextlib.suppress(JsNotFoundError):
            msg = await bus.js.get_msg(stream, seq)
            if msg.subject.startswith(prefix):
                found.append((msg.subject, dict(msg.headers or {}), msg.data or b""))
    return found


async def invocations(bus: Bus) -> list[tuple[str, dict[str, str], CloudEvent]]:
    return [(s, h, from_nats(h, b)) for s, h, b in await stored(bus, INVOCATIONS_STREAM)]


async def settled(d: Dispatcher, seen: int) -> None:
    """Wait until the dispatcher has handled ``seen`` deliveries, then a moment more."""

    async def done() -> bool:
        return d.stats["events_seen"] >= seen

    await eventually(done)
    await asyncio.sleep(0.1)


async def knows(d: Dispatcher, *names: str, version: int = 1) -> None:
    """Wait until the dispatcher's KV watch has indexed these triggers (at this version)."""

    async def indexed() -> bool:
        return all(n in d.index and d.triggers[n].version >= version for n in names)

    await eventually(indexed)


async def _forgot(d: Dispatcher, name: str) -> bool:
    return name not in d.index and name not in d.triggers


def storage_event(key: str = "in/cat.jpg", bucket: str = "images", **kw: Any) -> CloudEvent:
    record = {
        "eventName": "s3:ObjectCreated:Put",
        "s3": {
            "bucket": {"name": bucket},
            "object": {
                "key": key.replace("/", "%2F"),
                "size": 7,
                "eTag": '"e7"',
                "contentType": "image/jpeg",
            },
        },
    }
    return CloudEvent.create(
        type=kw.pop("type", CREATED),
        source=f"/storage/local/{bucket}",
        subject=key,
        extensions={"bucket": bucket},
        data=record,
        **kw,
    )


# -- the store --------------------------------------------------------------------------------


async def test_trigger_store_crud(bus: Bus) -> None:
    store = TriggerStore(bus)
    created = await store.put(Trigger(name="t", function="f", bucket="images"), create_only=True)
    assert created.version == 1 and created.created is not None and created.enabled
    with pytest.raises(ConflictError):
        await store.put(Trigger(name="t", function="f", bucket="x1"), create_only=True)
    updated = await store.put(Trigger(name="t", function="g", bucket="x1"))
    assert (updated.version, updated.function, updated.created) == (2, "g", created.created)
    disabled = await store.set_enabled("t", False)
    assert disabled.version == 3 and not disabled.enabled
    await store.put(Trigger(name="u", function="f", event_types=["a.b"]))
    assert [t.name for t in await store.list()] == ["t", "u"]
    assert [t.name for t in await store.list(function="f")] == ["u"]
    await store.delete("t")
    with pytest.raises(NotFoundError):
        await store.get("t")
    with pytest.raises(NotFoundError):
        await store.delete("t")
    with pytest.raises(NotFoundError):
        await store.set_enabled("t", True)
    again = await store.put(Trigger(name="t", function="f", bucket="images"), create_only=True)
    assert again.version == 1


# -- dispatching ------------------------------------------------------------------------------


async def test_one_invocation_per_event_and_matching_trigger(
    bus: Bus, dispatcher: Dispatcher
) -> None:
    for fn in ("resize", "index"):
        await add_function(bus, fn)
    store = TriggerStore(bus)
    await store.put(
        Trigger(
            name="thumbs",
            function="resize",
            bucket="images",
            key_suffix=".jpg",
            params={"width": 128, "event": "overwritten"},
            output=OutputTarget(bucket="thumbs", key_template="{stem}-128{ext}"),
        )
    )
    await store.put(
        Trigger(
            name="catalog", function="index", filters=[{"prefix": {"type": f"{PREFIX}.storage."}}]
        )
    )
    await store.put(Trigger(name="pngs", function="resize", bucket="images", key_suffix=".png"))
    await knows(dispatcher, "thumbs", "catalog", "pngs")
    ev = storage_event()
    await publish_event(bus, ev)
    await settled(dispatcher, 1)
    found = {
        inv.extensions["trigger"]: (subject, headers, inv)
        for subject, headers, inv in await invocations(bus)
    }
    assert set(found) == {"thumbs", "catalog"}
    subject, headers, inv = found["thumbs"]
    assert subject == "invoke.resize" and inv.subject == "resize"
    assert inv.id == activation_id_for(ev.id, "thumbs") == headers[MSG_ID_HEADER]
    assert len(inv.id) == 32 and inv.id != activation_id_for(ev.id, "catalog")
    assert (
        inv.type == f"{PREFIX}.invocation.requested" and inv.datacontenttype == "application/json"
    )
    assert inv.extensions == {
        "mode": "async",
        "causeid": ev.id,
        "trigger": "thumbs",
        "outbucket": "thumbs",
        "outkey": "in/cat-128.jpg",
    }
    body = orjson.loads(inv.data or b"")
    assert body["width"] == 128
    assert body["event"]["id"] == ev.id and body["event"]["bucket"] == "images"
    assert (
        body["event"]["type"] == CREATED
        and body["event"]["data"]["s3"]["bucket"]["name"] == "images"
    )
    assert body["object"] == {
        "bucket": "images",
        "key": "in/cat.jpg",
        "size": 7,
        "etag": "e7",
        "content_type": "image/jpeg",
    }
    assert "outbucket" not in found["catalog"][2].extensions
    assert dispatcher.counters() == {
        "events_seen": 1,
        "events_matched": 1,
        "invocations_enqueued": 2,
    }


async def test_a_trigger_sees_only_the_events_of_its_namespace(
    bus: Bus, dispatcher: Dispatcher
) -> None:
    for fn in ("resize", "team-b=resize"):
        await add_function(bus, fn)
    store = TriggerStore(bus)
    await store.put(Trigger(name="mine", function="resize", event_types=["com.example.x"]))
    await store.put(
        Trigger(name="team-b=mine", function="team-b=resize", event_types=["com.example.x"])
    )
    # a trigger written before events carried their namespace kept a subject confinement
    legacy = [{"prefix": {"subject": "team-b="}}]
    await store.put(
        Trigger(name="team-b=old", function="team-b=resize", bucket="b-in", filters=legacy)
    )
    await knows(dispatcher, "mine", "team-b=mine", "team-b=old")
    of_b = CloudEvent.create(
        type="com.example.x", source="/x", data={"n": 1}, extensions={"namespace": "team-b"}
    )
    bare = CloudEvent.create(type="com.example.x", source="/x", data={"n": 2})  # default's
    of_c = CloudEvent.create(
        type="com.example.x", source="/x", data={"n": 3}, extensions={"namespace": "team-c"}
    )
    b_upload = storage_event(bucket="b-in").model_copy(
        update={"extensions": {"bucket": "b-in", "namespace": "team-b"}}
    )
    default_upload = storage_event(bucket="b-in", id=new_id())  # no attribute: default's
    for event in (of_b, bare, of_c, b_upload, default_upload):
        await publish_event(bus, event)
    await settled(dispatcher, 5)
    fired = sorted(
        (inv.extensions["trigger"], inv.extensions["causeid"])
        for _, _, inv in await invocations(bus)
    )
    assert fired == sorted(
        [("team-b=mine", of_b.id), ("mine", bare.id), ("team-b=old", b_upload.id)]
    )


async def test_a_skip_notice_carries_the_namespace_of_its_trigger(
    bus: Bus, dispatcher: Dispatcher
) -> None:
    await add_function(bus, "team-b=resize")
    await TriggerStore(bus).put(
        Trigger(
            name="team-b=off",
            function="team-b=resize",
            event_types=["com.example.off"],
            enabled=False,
        )
    )
    await knows(dispatcher, "team-b=off")
    event = CloudEvent.create(
        type="com.example.off", source="/x", extensions={"namespace": "team-b"}
    )
    await publish_event(bus, event)
    await settled(dispatcher, 1)
    [(_, headers, body)] = await stored(bus, EVENTS_STREAM, "events.trigger.skipped")
    assert from_nats(headers, body).extensions["namespace"] == "team-b"


async def test_a_redelivered_or_replayed_event_enqueues_nothing_new(
    bus: Bus, dispatcher: Dispatcher
) -> None:
    await add_function(bus, "resize")
    await TriggerStore(bus).put(Trigger(name="thumbs", function="resize", bucket="images"))
    await knows(dispatcher, "thumbs")
    ev = storage_event()
    await publish_event(bus, ev)
    await settled(dispatcher, 1)
    assert len(await invocations(bus)) == 1
    # The same event stored again under another message id (a producer's retry, a replay).
    headers, body = to_nats(ev)
    await bus.js.publish(
        "events.storage.object.created", body, headers={**headers, MSG_ID_HEADER: "again"}
    )
    await settled(dispatcher, 2)
    # A dispatcher that lost its acks sees every event once more.
    await dispatcher.stop()
    await bus.js.delete_consumer(EVENTS_STREAM, "dispatcher")
    fresh = Dispatcher(bus, ack_wait=2)
    await fresh.start()
    try:
        await settled(fresh, 2)
    finally:
        await fresh.stop()
    assert len(await invocations(bus)) == 1
    assert dispatcher.stats["invocations_duplicate"] == 1
    assert fresh.counters()["invocations_duplicate"] == 2
    assert "invocations_enqueued" not in fresh.counters()


async def test_disabled_trigger_and_missing_function_are_visible(
    bus: Bus, dispatcher: Dispatcher
) -> None:
    await add_function(bus, "resize")
    store = TriggerStore(bus)
    await store.put(Trigger(name="off", function="resize", bucket="images", enabled=False))
    await store.put(Trigger(name="orphan", function="gone", bucket="images"))
    await store.put(Trigger(name="on", function="resize", bucket="images"))
    await knows(dispatcher, "off", "orphan", "on")
    ev = storage_event()
    await publish_event(bus, ev)
    await settled(dispatcher, 2)  # the event and one of the skip notices at least
    assert [inv.extensions["trigger"] for _, _, inv in await invocations(bus)] == ["on"]

    async def notices() -> list[dict[str, Any]]:
        found = await stored(bus, EVENTS_STREAM, "events.trigger.skipped")
        return [orjson.loads(body) for _, _, body in found] if len(found) == 2 else []

    by_trigger = {n["trigger"]: n for n in await eventually(notices)}
    assert by_trigger["off"] == {
        "trigger": "off",
        "function": "resize",
        "reason": "disabled",
        "event_id": ev.id,
        "event_type": CREATED,
        "activation_id": activation_id_for(ev.id, "off"),
    }
    assert by_trigger["orphan"]["reason"] == "function_missing"
    letters = await list_dead_letters(bus)
    assert [(d.kind, d.target) for d in letters] == [("dispatch", "gone")]
    assert letters[0].activation_id == activation_id_for(ev.id, "orphan")
    replayable = letters[0].cloud_event()
    assert replayable.subject == "gone" and replayable.extensions["causeid"] == ev.id
    counters = dispatcher.counters()
    assert counters["skipped_disabled"] == 1 and counters["skipped_function_missing"] == 1
    assert counters["invocations_enqueued"] == 1
    reply = await bus.nc.request(STATS_SUBJECT, b"", timeout=2)
    assert orjson.loads(reply.data)["skipped_disabled"] == 1


async def test_trigger_and_function_changes_apply_while_running(
    bus: Bus, dispatcher: Dispatcher
) -> None:
    store = TriggerStore(bus)
    await store.put(Trigger(name="late", function="later", bucket="images"))
    await add_function(bus, "later")
    await knows(dispatcher, "late")
    await publish_event(bus, storage_event("a.jpg"))
    await settled(dispatcher, 1)
    assert len(await invocations(bus)) == 1
    await store.set_enabled("late", False)
    await knows(dispatcher, "late", version=2)
    await publish_event(bus, storage_event("b.jpg"))
    await eventually(lambda: _has(dispatcher, "skipped_disabled"))
    await store.delete("late")
    await eventually(lambda: _forgot(dispatcher, "late"))
    await publish_event(bus, storage_event("c.jpg"))
    await eventually(lambda: _has(dispatcher, "events_unmatched"))
    assert len(await invocations(bus)) == 1 and "late" not in dispatcher.index


async def _has(d: Dispatcher, counter: str) -> bool:
    return d.stats[counter] > 0


async def test_activation_events_can_trigger_but_not_their_own_function(
    bus: Bus, dispatcher: Dispatcher
) -> None:
    for fn in ("train", "report"):
        await add_function(bus, fn)
    store = TriggerStore(bus)
    done = f"{PREFIX}.activation.completed"
    await store.put(Trigger(name="after-train", function="report", event_types=[done]))
    await store.put(Trigger(name="self", function="train", event_types=[done]))
    await knows(dispatcher, "after-train", "self")
    completed = CloudEvent.create(
        type=done, source="/functions/train", subject="a1", data={"function": "train"}
    )
    await publish_event(bus, completed)
    await eventually(lambda: _has(dispatcher, "skipped_loop"))
    assert [inv.extensions["trigger"] for _, _, inv in await invocations(bus)] == ["after-train"]
    # Bookkeeping events nobody asked for are acknowledged without decoding.
    await publish_event(
        bus, CloudEvent.create(type=f"{PREFIX}.activation.failed", source="/functions/x")
    )
    await eventually(lambda: _has(dispatcher, "events_unmatched"))


async def test_invalid_event_is_terminated_and_counted(bus: Bus, dispatcher: Dispatcher) -> None:
    await bus.js.publish("events.junk", b"not an event")
    await eventually(lambda: _has(dispatcher, "events_invalid"))
    info = await bus.js.consumer_info(EVENTS_STREAM, "dispatcher")
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_enqueue_failure_is_retried_until_it_succeeds(
    bus: Bus, dispatcher: Dispatcher
) -> None:
    await add_function(bus, "resize")
    await TriggerStore(bus).put(Trigger(name="thumbs", function="resize", bucket="images"))
    await knows(dispatcher, "thumbs")
    await bus.js.delete_stream(INVOCATIONS_STREAM)  # nothing can be enqueued for now
    ev = storage_event()
    await publish_event(bus, ev)
    await eventually(lambda: _has(dispatcher, "events_retried"))
    await ensure_layout(bus.js)
    await eventually(lambda: _has(dispatcher, "invocations_enqueued"))
    [(_, _, inv)] = await invocations(bus)
    assert inv.id == activation_id_for(ev.id, "thumbs")
    info = await bus.js.consumer_info(EVENTS_STREAM, "dispatcher")
    await eventually(lambda: _no_ack_pending(bus))
    assert info.num_pending == 0


async def _no_ack_pending(bus: Bus) -> bool:
    info = await bus.js.consumer_info(EVENTS_STREAM, "dispatcher")
    return info.num_ack_pending == 0


async def test_events_published_before_start_are_dispatched_and_index_loaded(bus: Bus) -> None:
    await add_function(bus, "resize")
    for i in range(50):
        await TriggerStore(bus).put(Trigger(name=f"t{i}", function="resize", bucket=f"bucket{i}"))
    events = [storage_event(f"{i}.jpg", bucket=f"bucket{i % 50}", id=new_id()) for i in range(100)]
    for ev in events:
        await publish_event(bus, ev)
    started = Dispatcher(bus)
    await started.start()
    try:
        assert len(started.index) == 50
        await eventually(lambda: _count(started, "invocations_enqueued", 100))
    finally:
        await started.stop()
    ids = {inv.id for _, _, inv in await invocations(bus)}
    assert ids == {activation_id_for(ev.id, f"t{i % 50}") for i, ev in enumerate(events)}


async def _count(d: Dispatcher, counter: str, n: int) -> bool:
    return d.stats[counter] >= n


async def test_a_json_object_payload_is_merged_over_the_static_params(
    bus: Bus, dispatcher: Dispatcher
) -> None:
    await add_function(bus, "greet")
    store = TriggerStore(bus)
    await store.put(
        Trigger(
            name="hello",
            function="greet",
            filters=[{"exact": {"type": "org.example.hello"}}],
            params={"greeting": "Hi", "name": "nobody"},
        )
    )
    await knows(dispatcher, "hello")
    event = CloudEvent.create(type="org.example.hello", source="/t", data={"name": "Ada"})
    await publish_event(bus, event, subject="events.org.example.hello")

    async def queued() -> int:
        return int((await bus.js.stream_info(INVOCATIONS_STREAM)).state.messages)

    await eventually(queued)
    [(_, _, invocation)] = await invocations(bus)
    body = invocation.json_data()
    assert body["greeting"] == "Hi" and body["name"] == "Ada"
    assert body["event"]["id"] == event.id and body["event"]["data"] == {"name": "Ada"}


async def test_an_event_published_right_after_its_trigger_is_created_is_matched(
    bus: Bus, dispatcher: Dispatcher, nats_url: str
) -> None:
    """An event published once its trigger's creation was answered is matched by it.

    The dispatcher learns triggers through a KV watch, which may lag the event's delivery
    (seen under load end to end); before matching a batch it waits until the watch has
    applied the bucket's last revision. Here a second connection writes and publishes.
    """
    await add_function(bus, "fresh")
    writer = await Bus.connect(nats_url, name="writer", prefix=PREFIX)
    rounds = 30
    try:
        store = TriggerStore(writer)
        for i in range(rounds):
            await store.put(Trigger(name=f"f{i}", function="fresh", event_types=[f"x.fresh.{i}"]))
            await publish_event(
                writer, CloudEvent.create(type=f"x.fresh.{i}", source="/t", data={})
            )
    finally:
        await writer.close()
    await settled(dispatcher, rounds)
    fired = sorted(inv.extensions["trigger"] for _, _, inv in await invocations(bus))
    assert fired == sorted(f"f{i}" for i in range(rounds))


async def test_events_held_for_the_freshness_check_go_back_at_once_on_stop(bus: Bus) -> None:
    """An event no trigger wants waits (here up to 30 s) for the trigger index's freshness
    check with those that come meanwhile; a dispatcher stopped while it waits gives it back to
    the consumer (a nak), and the next dispatcher has it at once, not after the ack wait."""
    held = Dispatcher(bus, ack_wait=60, hold_s=30)
    await held.start()
    try:
        await publish_event(bus, CloudEvent.create(type="x.nobody.wants", source="/t", data={}))

        async def delivered() -> bool:
            info = await bus.js.consumer_info(EVENTS_STREAM, "dispatcher")
            # in the dispatcher's hands: a stop while the message is still on its way in
            # (a fetch cancelled) leaves it to the ack wait (docs/architecture.md)
            return info.num_ack_pending == 1 and len(held._held.get("dispatcher", [])) == 1

        await eventually(delivered)
        assert held.stats["events_seen"] == 0  # held, not looked at yet
    finally:
        await held.stop()
    again = Dispatcher(bus, ack_wait=60)
    await again.start()
    try:
        await settled(again, 1)  # `eventually`'s 20 s: the ack wait would have been 60
        assert again.stats["events_unmatched"] == 1
    finally:
        await again.stop()


def completion(function: str = "train", **kw: Any) -> CloudEvent:
    return CloudEvent.create(
        type=f"{PREFIX}.activation.completed",
        source=f"/functions/{function}",
        data={"function": function},
        **kw,
    )


async def _reads_activations(bus: Bus) -> bool:
    try:
        await bus.js.consumer_info(EVENTS_STREAM, ACTIVATIONS_DURABLE)
    except JsNotFoundError:
        return False
    return True


async def test_activation_events_are_read_only_while_a_trigger_wants_them(
    bus: Bus, dispatcher: Dispatcher
) -> None:
    """Completions are stored on `activation.>`, which the dispatcher's `events.>` does not
    take: with no trigger that could want one, none is read (nor acked); the first trigger
    that wants them brings their consumer, the last one's removal deletes it."""
    await add_function(bus, "report")
    await publish_event(bus, completion(id="before"))
    await publish_event(bus, CloudEvent.create(type="x.other", source="/t", data={}))
    await settled(dispatcher, 1)  # the other event; the completion is not handed over
    assert dispatcher.stats["events_seen"] == 1
    assert not await _reads_activations(bus)
    assert [s for s, _, _ in await stored(bus, EVENTS_STREAM)] == [
        "activation.completed",
        "events.x.other",
    ]
    # a trigger that does not admit activation types changes nothing
    store = TriggerStore(bus)
    await store.put(Trigger(name="uploads", function="report", event_types=[CREATED]))
    await knows(dispatcher, "uploads")
    await asyncio.sleep(0.2)
    assert not await _reads_activations(bus)

    await asyncio.sleep(CLOCK_MARGIN_S + 0.2)  # `before` is older than the trigger
    await store.put(
        Trigger(name="after", function="report", event_types=[f"{PREFIX}.activation.completed"])
    )
    await publish_event(bus, completion(id="after-1"))  # maybe before the dispatcher knows
    await eventually(lambda: _fired(bus, "after-1"))
    assert await _reads_activations(bus)
    assert not await _fired(bus, "before")  # read (the consumer starts before it), not fired

    await store.delete("after")
    await eventually(lambda: _forgot(dispatcher, "after"))
    await eventually(lambda: _not(_reads_activations(bus)))
    seen = dispatcher.stats["events_seen"]
    await publish_event(bus, completion(id="after-2"))
    await asyncio.sleep(0.5)
    assert dispatcher.stats["events_seen"] == seen
    assert not await _fired(bus, "after-2")


async def test_a_broad_trigger_reads_activation_events_and_a_lost_consumer_comes_back(
    bus: Bus, dispatcher: Dispatcher
) -> None:
    """A trigger on every platform type (a prefix) wants activation events too. Their consumer
    deleted meanwhile (another dispatcher that saw the trigger go before this one saw it come)
    is made again, from the trigger's creation: a completion stored while it was gone fires."""
    await add_function(bus, "audit")
    await TriggerStore(bus).put(
        Trigger(name="all", function="audit", filters=[{"prefix": {"type": f"{PREFIX}."}}])
    )
    await knows(dispatcher, "all")
    await eventually(lambda: _reads_activations(bus))
    await publish_event(bus, completion(id="one"))
    await eventually(lambda: _fired(bus, "one"))

    await bus.js.delete_consumer(EVENTS_STREAM, ACTIVATIONS_DURABLE)
    await publish_event(bus, completion(id="while-gone"))
    await eventually(lambda: _reads_activations(bus))
    await eventually(lambda: _fired(bus, "while-gone"))
    fired = [inv.extensions["causeid"] for _, _, inv in await invocations(bus)]
    assert sorted(fired) == ["one", "while-gone"]  # `one` again: a duplicate, not enqueued


async def _fired(bus: Bus, event_id: str) -> bool:
    return any(inv.extensions.get("causeid") == event_id for _, _, inv in await invocations(bus))


async def _not(check: Any) -> bool:
    return not await check


async def test_a_trigger_fires_for_activation_events_since_it_began_to_want_them(
    bus: Bus, dispatcher: Dispatcher
) -> None:
    """A trigger made long ago and replaced to want completions does not fire for those stored
    before the replacement (its `created` is old; its `activations_since` is the replacement's),
    nor after a restart of the dispatcher with the consumer gone; a later replacement that
    goes on wanting them keeps its time."""
    await add_function(bus, "report")
    store = TriggerStore(bus)
    made = await store.put(Trigger(name="chain", function="report", event_types=["x.other"]))
    assert made.activations_since is None
    await publish_event(bus, completion(id="old"))
    await asyncio.sleep(CLOCK_MARGIN_S + 0.2)
    done = [f"{PREFIX}.activation.completed"]
    wanting = await store.put(made.model_copy(update={"event_types": done}))
    assert wanting.activations_since is not None and wanting.created == made.created
    again = await store.put(wanting.model_copy(update={"params": {"x": 1}}))
    assert again.activations_since == wanting.activations_since
    await publish_event(bus, completion(id="new"))
    await eventually(lambda: _fired(bus, "new"))
    assert not await _fired(bus, "old")

    await dispatcher.stop()
    await bus.js.delete_consumer(EVENTS_STREAM, ACTIVATIONS_DURABLE)
    await publish_event(bus, completion(id="while-down"))
    restarted = Dispatcher(bus, ack_wait=2, retry_base=0.05, retry_max=0.2)
    await restarted.start()
    try:
        await eventually(lambda: _fired(bus, "while-down"))
        await asyncio.sleep(0.3)
        causes = sorted(inv.extensions["causeid"] for _, _, inv in await invocations(bus))
        assert causes == ["new", "while-down"]
    finally:
        await restarted.stop()
