"""Subscriptions: the model's validation, matching, and the KV store against a real nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from eventbus.connection import Bus
from eventbus.errors import ConflictError, NotFoundError, ValidationFailedError
from eventbus.streams import ensure_layout
from eventbus.subscriptions import (
    Subscription,
    SubscriptionStore,
    sink_problem,
    subscription_key,
)
from eventbus.types import CloudEvent

HOOK = "http://127.0.0.1:9/hook"


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    connected = await Bus.connect(nats_url, name="test-subscriptions")
    await ensure_layout(connected.js)
    yield connected
    await connected.close()


@pytest.fixture
async def store(bus: Bus) -> AsyncIterator[SubscriptionStore]:
    subscriptions = SubscriptionStore(bus)
    yield subscriptions
    for found in await subscriptions.list():
        await subscriptions.delete(found.key)


def _event(**attrs: Any) -> CloudEvent:
    base: dict[str, Any] = {"type": "com.example.order.created", "source": "/shop"}
    base.update(attrs)
    return CloudEvent.create(**base)


def _error_text(body: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        Subscription.model_validate(body)
    return str(caught.value)


def test_http_and_nats_sinks_set_the_protocol() -> None:
    assert Subscription(sink="https://hooks.example/x").protocol == "HTTP"
    assert Subscription(sink="nats:acme.orders").protocol == "NATS"
    assert Subscription(sink="nats:acme.orders", protocol="NATS").protocol == "NATS"


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({"sink": "ftp://host/x"}, "http(s)://"),
        ({"sink": "http:///no-host"}, "with a host"),
        ({"sink": "nats:"}, "printable ASCII"),
        ({"sink": "nats:a..b"}, "printable ASCII"),
        ({"sink": "nats:acme.orders\n"}, "printable ASCII"),
        ({"sink": "nats:acme.*"}, "wildcards"),
        ({"sink": "nats:events.orders"}, "reserved"),
        ({"sink": "nats:$JS.API.INFO"}, "reserved"),
        ({"sink": HOOK, "protocol": "NATS"}, "does not fit"),
        ({"sink": HOOK, "protocol": "KAFKA"}, "protocol"),
        ({"sink": HOOK, "id": "has.dot"}, "id"),
        ({"sink": HOOK, "types": [""]}, "empty"),
        ({"sink": HOOK, "protocolsettings": {"headers": {"ce-id": "x"}}}, "ce-id"),
        ({"sink": HOOK, "protocolsettings": {"headers": {"X-A": "a\r\nb"}}}, "line break"),
        ({"sink": HOOK, "protocolsettings": {"headers": {"X-A\n": "a"}}}, "X-A"),
        ({"sink": HOOK, "protocolsettings": {"method": "GET"}}, "method"),
        ({"sink": HOOK, "config": {"max_tries": 0}}, "max_tries"),
        ({"sink": HOOK, "unknown": 1}, "unknown"),
    ],
)
def test_invalid_subscriptions_name_the_bad_part(body: dict[str, Any], names: str) -> None:
    assert names in _error_text(body)


def test_an_invalid_filter_is_refused_naming_the_bad_part() -> None:
    text = _error_text({"sink": HOOK, "filters": [{"exact": {"type": "a"}}, {"exakt": {}}]})
    assert "filters[1]" in text and "exakt" in text
    text = _error_text({"sink": HOOK, "filters": [{"all": [{"prefix": {"type": 3}}]}]})
    assert "filters[0].all[0].prefix.type" in text


def test_matching_needs_source_types_and_filters() -> None:
    sub = Subscription(
        sink=HOOK,
        source="/shop",
        types=["com.example.order.created", "com.example.order.paid"],
        filters=[{"prefix": {"subject": "eu/"}}],
    )
    matches = sub.matcher()
    assert matches(_event(subject="eu/42"))
    assert matches(_event(type="com.example.order.paid", subject="eu/1"))
    assert not matches(_event(subject="us/42"))
    assert not matches(_event(source="/elsewhere", subject="eu/42"))
    assert not matches(_event(type="com.example.order.cancelled", subject="eu/42"))
    assert Subscription(sink=HOOK).matcher()(_event())


async def test_store_create_get_list_put_delete(store: SubscriptionStore) -> None:
    created = await store.create(Subscription(sink=HOOK, types=["a.b"]))
    assert created.id and created.created and created.updated == created.created
    assert await store.get(created.key) == created
    named = await store.create(Subscription(id="team-orders", sink="nats:acme.orders"))
    assert [s.key for s in await store.list()] == [created.key, "team-orders"]
    with pytest.raises(ConflictError):
        await store.create(Subscription(id="team-orders", sink=HOOK))

    replaced, was_new = await store.put(named.key, Subscription(sink=HOOK, enabled=False))
    assert not was_new and replaced.created == named.created
    assert replaced.updated is not None and named.updated is not None
    assert replaced.updated > named.updated
    assert (await store.get("team-orders")).protocol == "HTTP"
    fresh, was_new = await store.put("put-made", Subscription(sink=HOOK))
    assert was_new and fresh.id == "put-made"
    with pytest.raises(ValidationFailedError):
        await store.put("put-made", Subscription(id="other", sink=HOOK))

    await store.delete("team-orders")
    with pytest.raises(NotFoundError):
        await store.get("team-orders")
    with pytest.raises(NotFoundError):
        await store.delete("team-orders")
    again = await store.create(Subscription(id="team-orders", sink=HOOK))
    assert again.created is not None and named.created is not None
    assert again.created > named.created


async def test_delivery_state_counts_attempts(store: SubscriptionStore) -> None:
    sub = await store.create(Subscription(sink=HOOK))
    assert (await store.delivery_state(sub.key)).delivered == 0
    await store.record_attempt(sub.key, "e1", ok=False, error="HTTP 503", dead=False)
    await store.record_attempt(sub.key, "e1", ok=True, error=None, dead=False)
    await store.record_attempt(sub.key, "e2", ok=False, error="HTTP 400: no", dead=True)
    state = await store.delivery_state(sub.key)
    assert (state.delivered, state.failed, state.dead_lettered) == (1, 2, 1)
    assert state.last_event_id == "e2" and state.last_error == "HTTP 400: no"
    assert state.last_delivery is not None and state.last_error_time is not None
    states = await store.delivery_states([sub.key, "nothing-here"])
    assert states["nothing-here"].delivered == 0 and states[sub.key].delivered == 1
    await store.delete(sub.key)
    assert (await store.delivery_state(sub.key)).failed == 0


def test_a_subscription_matches_only_its_namespace() -> None:
    of_default = Subscription(id="s1", sink=HOOK, types=["com.example.order.created"]).matcher()
    of_b = Subscription(id="team-b=s1", sink=HOOK, types=["com.example.order.created"]).matcher()
    bare, tagged = _event(), _event(extensions={"namespace": "team-b"})
    assert of_default(bare) and not of_default(tagged)  # no attribute: default's event
    assert of_b(tagged) and not of_b(bare)
    assert not of_b(_event(extensions={"namespace": "team-c"}))


async def test_the_store_keeps_namespaces_apart(store: SubscriptionStore) -> None:
    mine = await store.create(Subscription(id="same", sink=HOOK))
    theirs = await store.create(Subscription(id="same", sink=HOOK), "team-b")
    assert (mine.key, theirs.key) == ("same", "team-b=same")
    assert theirs.namespace == "team-b" and mine.namespace == "default"
    assert [s.key for s in await store.list("team-b")] == ["team-b=same"]
    assert [s.key for s in await store.list("default")] == ["same"]
    with pytest.raises(ConflictError):
        await store.create(Subscription(id="same", sink=HOOK), "team-b")
    with pytest.raises(NotFoundError):
        await store.get("team-c=same")
    assert subscription_key("team-b", "x") == "team-b=x" and subscription_key("default", "x") == "x"
    with pytest.raises(ValueError):
        subscription_key("team-b", "default=x")


async def test_outside_default_a_nats_sink_stays_under_its_namespace(
    store: SubscriptionStore,
) -> None:
    for subject in ("minio.events", "ns.team-c.x", "ns.team-b", "acme.orders"):
        with pytest.raises(ValidationFailedError, match="outside the namespace's own subjects"):
            await store.create(Subscription(sink=f"nats:{subject}"), "team-b")
    made = await store.create(Subscription(sink="nats:ns.team-b.orders"), "team-b")
    assert made.namespace == "team-b"
    assert (await store.create(Subscription(sink="nats:acme.orders"))).namespace == "default"
    assert sink_problem("team-b", HOOK) is None  # webhooks are not subjects
