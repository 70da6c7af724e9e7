"""/v1/subscriptions: register event sinks (CloudEvents Subscriptions API shape) and read
their delivery state.

Subscriptions belong to the caller's namespace and get only its events; the ids a caller
sees and names are its own (stored qualified outside ``default``, as triggers are).
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Path, Request, Response
from pydantic import Field

from eventbus.errors import ValidationFailedError
from eventbus.subscriptions import (
    SUBSCRIPTION_ID_PATTERN,
    DeliveryState,
    Subscription,
    SubscriptionStore,
    split_key,
    subscription_key,
)
from gateway.auth.access import namespace
from gateway.state import state_of

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"])
IdPath = Path(pattern=SUBSCRIPTION_ID_PATTERN, description="subscription id")
_ID = re.compile(SUBSCRIPTION_ID_PATTERN)


class SubscriptionView(Subscription):
    """A subscription with its delivery state."""

    delivery: DeliveryState = Field(default_factory=DeliveryState)


def _store(request: Request) -> SubscriptionStore:
    return SubscriptionStore(state_of(request).bus)


def _key(request: Request, subscription_id: str) -> str:
    return subscription_key(namespace(request), subscription_id)


def _view(subscription: Subscription, state: DeliveryState) -> SubscriptionView:
    local = split_key(subscription.key)[1]
    return SubscriptionView.model_validate(
        {**subscription.model_dump(), "id": local, "delivery": state}
    )


def _body_id(body: Subscription) -> str | None:
    if body.id is not None and not _ID.match(body.id):
        raise ValidationFailedError(
            f"id: {body.id!r} is not a valid subscription id ([A-Za-z0-9][A-Za-z0-9_-]*)",
            field="id",
        )
    return body.id


@router.get("", response_model=list[SubscriptionView])
async def list_subscriptions(request: Request) -> list[SubscriptionView]:
    """The namespace's subscriptions with their delivery state, oldest first."""
    store = _store(request)
    found = await store.list(namespace(request))
    states = await store.delivery_states([s.key for s in found])
    return [_view(s, states[s.key]) for s in found]


@router.post("", status_code=201, response_model=SubscriptionView)
async def create_subscription(
    request: Request, body: Subscription, response: Response
) -> SubscriptionView:
    """Register a sink; the id is assigned unless the body names one (409 when taken)."""
    _body_id(body)
    _check_sink(request, body)
    stored = await _store(request).create(body, namespace(request))
    view = _view(stored, DeliveryState())
    response.headers["location"] = f"/v1/subscriptions/{view.id}"
    return view


@router.get("/{subscription_id}", response_model=SubscriptionView)
async def get_subscription(request: Request, subscription_id: str = IdPath) -> SubscriptionView:
    """One subscription and its delivery state."""
    store, key = _store(request), _key(request, subscription_id)
    found = await store.get(key)
    return _view(found, await store.delivery_state(key))


@router.put(
    "/{subscription_id}",
    response_model=SubscriptionView,
    responses={201: {"model": SubscriptionView, "description": "created (it did not exist)"}},
)
async def put_subscription(
    request: Request, body: Subscription, response: Response, subscription_id: str = IdPath
) -> SubscriptionView:
    """Create (201) or replace a subscription under this id; delivery goes on from where it was."""
    if _body_id(body) not in (None, subscription_id):
        raise ValidationFailedError(
            f"the body names {body.id!r} but the path names {subscription_id!r}", field="id"
        )
    _check_sink(request, body)
    store, key = _store(request), _key(request, subscription_id)
    stored, created = await store.put(key, body.model_copy(update={"id": None}))
    if created:
        response.status_code = 201
        response.headers["location"] = f"/v1/subscriptions/{subscription_id}"
    return _view(stored, await store.delivery_state(key))


@router.delete("/{subscription_id}", status_code=204)
async def delete_subscription(request: Request, subscription_id: str = IdPath) -> Response:
    """Delete a subscription: its undelivered events are dropped and delivery stops."""
    await _store(request).delete(_key(request, subscription_id))
    return Response(status_code=204)


def _check_sink(request: Request, body: Subscription) -> None:
    """A webhook at an address the platform does not send to is refused now (422), not at
    its first delivery; a name is checked when each event is sent (`eventbus.egress`)."""
    if body.protocol == "HTTP":
        state_of(request).settings.egress().check_literal(body.sink)
