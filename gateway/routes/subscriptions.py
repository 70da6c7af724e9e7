"""/v1/subscriptions: register event sinks (CloudEvents Subscriptions API shape) and read
their delivery state."""

from __future__ import annotations

from fastapi import APIRouter, Path, Request, Response
from pydantic import Field

from eventbus.subscriptions import (
    SUBSCRIPTION_ID_PATTERN,
    DeliveryState,
    Subscription,
    SubscriptionStore,
)
from gateway.state import state_of

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"])
IdPath = Path(pattern=SUBSCRIPTION_ID_PATTERN, description="subscription id")


class SubscriptionView(Subscription):
    """A subscription with its delivery state."""

    delivery: DeliveryState = Field(default_factory=DeliveryState)


def _store(request: Request) -> SubscriptionStore:
    return SubscriptionStore(state_of(request).bus)


def _view(subscription: Subscription, state: DeliveryState) -> SubscriptionView:
    return SubscriptionView.model_validate({**subscription.model_dump(), "delivery": state})


@router.get("", response_model=list[SubscriptionView])
async def list_subscriptions(request: Request) -> list[SubscriptionView]:
    """Every subscription with its delivery state, oldest first."""
    store = _store(request)
    found = await store.list()
    states = await store.delivery_states([s.key for s in found])
    return [_view(s, states[s.key]) for s in found]


@router.post("", status_code=201, response_model=SubscriptionView)
async def create_subscription(
    request: Request, body: Subscription, response: Response
) -> SubscriptionView:
    """Register a sink; the id is assigned unless the body names one (409 when taken)."""
    stored = await _store(request).create(body)
    response.headers["location"] = f"/v1/subscriptions/{stored.key}"
    return _view(stored, DeliveryState())


@router.get("/{subscription_id}", response_model=SubscriptionView)
async def get_subscription(request: Request, subscription_id: str = IdPath) -> SubscriptionView:
    """One subscription and its delivery state."""
    store = _store(request)
    found = await store.get(subscription_id)
    return _view(found, await store.delivery_state(subscription_id))


@router.put("/{subscription_id}", response_model=SubscriptionView)
async def put_subscription(
    request: Request, body: Subscription, response: Response, subscription_id: str = IdPath
) -> SubscriptionView:
    """Create (201) or replace a subscription under this id; delivery goes on from where it was."""
    store = _store(request)
    stored, created = await store.put(subscription_id, body)
    if created:
        response.status_code = 201
        response.headers["location"] = f"/v1/subscriptions/{stored.key}"
    return _view(stored, await store.delivery_state(subscription_id))


@router.delete("/{subscription_id}", status_code=204)
async def delete_subscription(request: Request, subscription_id: str = IdPath) -> Response:
    """Delete a subscription: its undelivered events are dropped and delivery stops."""
    await _store(request).delete(subscription_id)
    return Response(status_code=204)
