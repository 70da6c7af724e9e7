"""The deliverer against a real nats-server and a real HTTP receiver on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError as JsNotFoundError

from eventbus.codec import from_nats
from eventbus.connection import Bus
from eventbus.delivery import Deliverer
from eventbus.dlq import DeadLetter, list_dead_letters
from eventbus.egress import EgressPolicy
from eventbus.publish import publish_event
from eventbus.streams import ensure_layout
from eventbus.subscriptions import Subscription, SubscriptionStore, consumer_name
from eventbus.types import EVENTS_STREAM, CloudEvent, new_id
from tests.support import eventually

QUIET_S = 0.6  # how long "nothing arrives" is watched for
#: the receivers listen on 127.0.0.1: the one loopback address these deliverers may reach
RECEIVERS = EgressPolicy.parse("127.0.0.1/32")


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class Receiver:
    """A threaded HTTP server; ``plans[path]`` lists the statuses of successive requests."""

    url: str = ""
    plans: dict[str, list[int]] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            plan = self.plans.get(path, [])
            status = plan.pop(0) if len(plan) > 1 else (plan[0] if plan else 200)
            self.requests.append(Received(method, path, headers, body, status))
            return status


@contextlib.contextmanager
def serve_receiver(host: str = "127.0.0.1") -> Iterator[Receiver]:
    """Run a `Receiver` on a free port of ``host`` (loopback) while the block runs."""
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = state.answer(self.command, self.path, headers, body)
            self.send_response(status)
            if status == 503:
                self.send_header("retry-after", "0")
            self.send_header("content-length", "0")
            self.end_headers()

        do_POST = do_PUT = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    state.url = f"http://{host}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serve_receiver() as running:
        yield running


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    connected = await Bus.connect(nats_url, name="test-delivery")
    await ensure_layout(connected.js)
    yield connected
    await connected.close()


@pytest.fixture
async def store(bus: Bus) -> AsyncIterator[SubscriptionStore]:
    subscriptions = SubscriptionStore(bus)
    yield subscriptions
    for found in await subscriptions.list():
        await subscriptions.delete(found.key)


@pytest.fixture
async def deliverer(bus: Bus, store: SubscriptionStore) -> AsyncIterator[Deliverer]:
    running = Deliverer(bus, ack_wait=5, base_delay=0.05, max_delay=0.2, egress=RECEIVERS)
    await running.start()
    yield running
    await running.stop()


def _event(kind: str, **attrs: Any) -> CloudEvent:
    return CloudEvent.create(
        type=f"com.example.test.{kind}", source="/tests", data={"n": 1}, **attrs
    )


async def _subscribe(store: SubscriptionStore, **body: Any) -> Subscription:
    return await store.create(Subscription.model_validate(body))


async def _letters(bus: Bus, target: str) -> list[DeadLetter]:
    return await list_dead_letters(bus, target=target, limit=500)


async def test_flaky_webhook_gets_the_event_on_the_third_try_in_binary_mode(
    bus: Bus, store: SubscriptionStore, deliverer: Deliverer, receiver: Receiver
) -> None:
    receiver.plans["/flaky"] = [503, 500, 204]
    sub = await _subscribe(
        store,
        sink=receiver.url + "/flaky",
        types=["com.example.test.flaky"],
        protocolsettings={"method": "PUT", "headers": {"X-Token": "s3cret"}},
    )
    event = _event("flaky", subject="orders/7", extensions={"tenant": "acme", "n": 3})
    await publish_event(bus, event)

    await eventually(lambda: any(r.status == 204 for r in receiver.at("/flaky")))
    tries = receiver.at("/flaky")
    assert [r.status for r in tries] == [503, 500, 204]
    last = tries[-1]
    assert last.method == "PUT" and last.headers["x-token"] == "s3cret"
    assert last.headers["ce-id"] == event.id
    assert last.headers["ce-specversion"] == "1.0"
    assert last.headers["ce-type"] == "com.example.test.flaky"
    assert last.headers["ce-source"] == "/tests"
    assert last.headers["ce-subject"] == "orders/7"
    assert last.headers["ce-tenant"] == "acme" and last.headers["ce-n"] == "3"
    assert "ce-time" in last.headers and "ce-datacontenttype" not in last.headers
    assert last.headers["content-type"] == "application/json"
    assert last.body == b'{"n":1}'
    state = await eventually(lambda: _state_when(store, sub.key, delivered=1))
    assert (state.failed, state.dead_lettered) == (2, 0)
    assert state.last_error and state.last_error.startswith("HTTP 500")
    assert await _letters(bus, sub.key) == []


async def _state_when(store: SubscriptionStore, key: str, **counts: int) -> Any:
    state = await store.delivery_state(key)
    return state if all(getattr(state, k) == v for k, v in counts.items()) else None


async def test_always_failing_webhook_leaves_exactly_one_dead_letter(
    bus: Bus, store: SubscriptionStore, deliverer: Deliverer, receiver: Receiver
) -> None:
    receiver.plans["/down"] = [500]
    sub = await _subscribe(
        store, sink=receiver.url + "/down", types=["com.example.test.down"], config={"max_tries": 3}
    )
    event = _event("down")
    await publish_event(bus, event)

    letters = await eventually(lambda: _letters(bus, sub.key))
    await asyncio.sleep(QUIET_S)
    assert len(receiver.at("/down")) == 3
    letters = await _letters(bus, sub.key)
    assert len(letters) == 1
    letter = letters[0]
    assert letter.kind == "delivery" and letter.attempts == 3
    assert letter.error.startswith("HTTP 500") and letter.cloud_event().id == event.id
    state = await eventually(lambda: _state_when(store, sub.key, dead_lettered=1))
    assert (state.delivered, state.failed) == (0, 3)


async def test_a_client_error_is_not_retried(
    bus: Bus, store: SubscriptionStore, deliverer: Deliverer, receiver: Receiver
) -> None:
    receiver.plans["/gone"] = [410]
    sub = await _subscribe(store, sink=receiver.url + "/gone", types=["com.example.test.gone"])
    await publish_event(bus, _event("gone"))
    letters = await eventually(lambda: _letters(bus, sub.key))
    assert letters[0].attempts == 1 and "410" in letters[0].error
    assert len(receiver.at("/gone")) == 1


async def test_a_filter_that_does_not_match_delivers_nothing(
    bus: Bus, store: SubscriptionStore, deliverer: Deliverer, receiver: Receiver
) -> None:
    kinds = ["com.example.test.filtered"]
    miss = await _subscribe(
        store,
        sink=receiver.url + "/miss",
        types=kinds,
        filters=[{"exact": {"subject": "eu/1"}}, {"not": {"suffix": {"subject": ".tmp"}}}],
    )
    await _subscribe(store, sink=receiver.url + "/witness", types=kinds)
    await publish_event(bus, _event("filtered", subject="us/1"))
    await eventually(lambda: receiver.at("/witness"))
    await asyncio.sleep(QUIET_S)
    assert receiver.at("/miss") == []
    assert (await store.delivery_state(miss.key)).delivered == 0


async def test_a_nats_sink_receives_the_event_in_binary_mode(
    bus: Bus, store: SubscriptionStore, deliverer: Deliverer, nats_url: str
) -> None:
    listener = await nats.connect(nats_url)
    inbox = await listener.subscribe("acme.orders.events")
    await listener.flush()
    sub = await _subscribe(store, sink="nats:acme.orders.events", types=["com.example.test.nats"])
    event = _event("nats", subject="o-1")
    await publish_event(bus, event)
    msg = await inbox.next_msg(timeout=10)
    await listener.close()
    assert msg.headers is not None and msg.headers["ce-id"] == event.id
    assert msg.headers["Nats-Msg-Id"] == event.id
    assert from_nats(msg.headers, msg.data) == event
    await eventually(lambda: _state_when(store, sub.key, delivered=1))


async def test_activation_events_reach_a_subscription_also_through_a_consumer_made_before(
    bus: Bus, store: SubscriptionStore, receiver: Receiver
) -> None:
    """Activation events are stored on `activation.>` beside `events.>`: a subscription reads
    both, and one whose consumer was made when everything was under `events.>` (filtered on
    it alone) is given the second filter when its deliverer starts."""
    done = "io.deepfaas.activation.completed"
    old = await _subscribe(store, sink=receiver.url + "/old", types=[done])
    await _subscribe(store, sink=receiver.url + "/new", types=[done])
    await bus.js.add_consumer(
        EVENTS_STREAM,
        ConsumerConfig(
            durable_name=consumer_name(old.key),
            filter_subject="events.>",
            deliver_policy=DeliverPolicy.NEW,
            ack_policy=AckPolicy.EXPLICIT,
        ),
    )
    deliverer = Deliverer(bus, ack_wait=5, base_delay=0.05, max_delay=0.2, egress=RECEIVERS)
    await deliverer.start()
    try:

        async def both_filters() -> bool:
            info = await bus.js.consumer_info(EVENTS_STREAM, consumer_name(old.key))
            return sorted(info.config.filter_subjects or []) == ["activation.>", "events.>"]

        await eventually(both_filters)
        event = CloudEvent.create(type=done, source="/functions/f", data={"function": "f"})
        assert (await publish_event(bus, event)).stream == EVENTS_STREAM
        await eventually(lambda: receiver.at("/old") and receiver.at("/new"))
    finally:
        await deliverer.stop()
    assert [r.headers["ce-id"] for r in receiver.at("/old") + receiver.at("/new")] == [event.id] * 2


async def test_a_subscription_reads_activation_events_only_if_it_could_want_one(
    bus: Bus, store: SubscriptionStore, deliverer: Deliverer, receiver: Receiver
) -> None:
    """Its consumer filters `events.>` alone unless its types and filters admit a platform
    activation event; a replacement that does is given `activation.>` before its answer, so
    a completion stored right after reaches it."""

    async def subjects(sub: Subscription) -> list[str]:
        config = (await bus.js.consumer_info(EVENTS_STREAM, consumer_name(sub.key))).config
        return sorted(config.filter_subjects or [config.filter_subject or ""])

    done = "io.deepfaas.activation.completed"
    narrow = await _subscribe(store, sink=receiver.url + "/narrow", types=["com.example.test.x"])
    broad = await _subscribe(
        store, sink=receiver.url + "/broad", filters=[{"prefix": {"type": "io.deepfaas."}}]
    )
    await eventually(lambda: len(deliverer.active()) == 2)
    for sub in (narrow, broad):
        await eventually(lambda sub=sub: _has_consumer(bus, sub))
    assert await subjects(narrow) == ["events.>"]
    assert await subjects(broad) == ["activation.>", "events.>"]

    await deliverer.stop()  # the store changes the filter as it answers, not the deliverer
    replaced = narrow.model_copy(update={"types": [done]})
    await store.put(narrow.key, replaced)
    assert await subjects(narrow) == ["activation.>", "events.>"]
    event = CloudEvent.create(type=done, source="/functions/f", data={"function": "f"})
    await publish_event(bus, event)
    again = Deliverer(bus, ack_wait=5, base_delay=0.05, max_delay=0.2, egress=RECEIVERS)
    await again.start()
    try:
        await eventually(lambda: receiver.at("/narrow") and receiver.at("/broad"))
    finally:
        await again.stop()
    assert [r.headers["ce-id"] for r in receiver.at("/narrow")] == [event.id]


async def _has_consumer(bus: Bus, sub: Subscription) -> bool:
    try:
        await bus.js.consumer_info(EVENTS_STREAM, consumer_name(sub.key))
    except JsNotFoundError:
        return False
    return True


async def test_deleting_a_subscription_stops_its_delivery(
    bus: Bus, store: SubscriptionStore, deliverer: Deliverer, receiver: Receiver
) -> None:
    kinds = ["com.example.test.deleted"]
    doomed = await _subscribe(store, sink=receiver.url + "/doomed", types=kinds)
    await _subscribe(store, sink=receiver.url + "/kept", types=kinds)
    await publish_event(bus, _event("deleted"))
    await eventually(lambda: receiver.at("/doomed") and receiver.at("/kept"))

    await store.delete(doomed.key)
    with pytest.raises(JsNotFoundError):
        await bus.js.consumer_info(EVENTS_STREAM, consumer_name(doomed.key))
    await publish_event(bus, _event("deleted"))
    await eventually(lambda: len(receiver.at("/kept")) == 2)
    await asyncio.sleep(QUIET_S)
    assert len(receiver.at("/doomed")) == 1
    with pytest.raises(JsNotFoundError):  # the deliverer did not bring it back
        await bus.js.consumer_info(EVENTS_STREAM, consumer_name(doomed.key))


async def test_events_since_creation_wait_for_the_deliverer_and_a_paused_subscription(
    bus: Bus, store: SubscriptionStore, receiver: Receiver
) -> None:
    kinds = ["com.example.test.later"]
    early = _event("later")
    await publish_event(bus, early)  # before the subscription: never delivered
    await asyncio.sleep(0.01)
    sub = await _subscribe(store, sink=receiver.url + "/later", types=kinds, enabled=False)
    first = _event("later")
    await publish_event(bus, first)  # no deliverer runs yet, and the subscription is paused

    deliverer = Deliverer(bus, ack_wait=5, base_delay=0.05, max_delay=0.2, egress=RECEIVERS)
    await deliverer.start()
    try:
        await asyncio.sleep(QUIET_S)
        assert receiver.at("/later") == []
        await store.put(sub.key, sub.model_copy(update={"enabled": True}))
        await eventually(lambda: receiver.at("/later"))
        second = _event("later")
        await publish_event(bus, second)
        await eventually(lambda: len(receiver.at("/later")) == 2)
    finally:
        await deliverer.stop()
    ids = [r.headers["ce-id"] for r in receiver.at("/later")]
    assert ids == [first.id, second.id]


async def test_a_replaced_subscription_delivers_to_its_new_sink(
    bus: Bus, store: SubscriptionStore, deliverer: Deliverer, receiver: Receiver
) -> None:
    sub = await _subscribe(store, sink=receiver.url + "/old", types=["com.example.test.moved"])
    await publish_event(bus, _event("moved"))
    await eventually(lambda: receiver.at("/old"))
    await store.put(sub.key, sub.model_copy(update={"sink": receiver.url + "/new"}))
    await eventually(lambda: deliverer.active()[sub.key].sink == receiver.url + "/new")
    await publish_event(bus, _event("moved", id=new_id()))
    await eventually(lambda: receiver.at("/new"))
    assert len(receiver.at("/old")) == 1


async def test_a_sink_at_a_refused_address_is_dead_lettered_once_and_never_sent(
    bus: Bus, store: SubscriptionStore, deliverer: Deliverer
) -> None:
    """127.0.0.2 is loopback but not the allowed 127.0.0.1: one dead letter naming why, no
    retry, and its receiver hears nothing (a subscription stored past the gateway's check)."""
    with serve_receiver("127.0.0.2") as elsewhere:
        sub = await _subscribe(store, sink=elsewhere.url + "/x", types=["com.example.test.refused"])
        await publish_event(bus, _event("refused"))
        letters = await eventually(lambda: _letters(bus, sub.key))
        await asyncio.sleep(QUIET_S)
        assert elsewhere.requests == []
    assert len(letters) == 1 and letters[0].attempts == 1
    assert "127.0.0.2 is loopback" in letters[0].error, letters[0].error
    assert "DEEPFAAS_EGRESS_ALLOW" in letters[0].error


async def test_a_name_is_checked_at_the_address_it_resolves_to(
    bus: Bus, store: SubscriptionStore, receiver: Receiver
) -> None:
    """`localhost` is sent to with 127.0.0.1 allowed (its Host header kept) and refused with
    the default policy, which allows global addresses only."""
    port = receiver.url.rsplit(":", 1)[1]
    kinds = ["com.example.test.named"]
    sub = await _subscribe(store, sink=f"http://localhost:{port}/named", types=kinds)
    for egress in (RECEIVERS, EgressPolicy()):
        deliverer = Deliverer(bus, ack_wait=5, base_delay=0.05, max_delay=0.2, egress=egress)
        await deliverer.start()
        try:
            await publish_event(bus, _event("named"))
            if egress is RECEIVERS:
                [got] = await eventually(lambda: receiver.at("/named"))
                assert got.headers["host"] == f"localhost:{port}"
            else:
                letters = await eventually(lambda: _letters(bus, sub.key))
                assert "127.0.0.1 is loopback" in letters[0].error, letters[0].error
        finally:
            await deliverer.stop()
    assert len(receiver.at("/named")) == 1
