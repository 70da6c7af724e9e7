"""Activations: the newest first, filtered by function, status and age; one in full."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from gateway.auth.access import namespace, qualified
from gateway.console.render import FRAGMENTS, FragmentRoute, fragment
from gateway.params import ActivationId, FunctionFilter
from gateway.routes import activations as api
from gateway.routes import functions as functions_api
from gateway.state import state_of
from runtimes.types import ActivationRecord, ActivationStatus

router = APIRouter(
    prefix=f"{FRAGMENTS}/activations", route_class=FragmentRoute, include_in_schema=False
)
Status = Annotated[ActivationStatus | None, Query()]
Minutes = Annotated[int | None, Query(ge=1, le=60 * 24 * 30)]


@router.get("/filters")
async def filters(request: Request) -> Response:
    """The filter form (its function choices are the namespace's functions)."""
    names = [f.name for f in await functions_api.list_functions(request)]
    return fragment(
        request, "activation_filters.html", names=names, statuses=list(ActivationStatus)
    )


@router.get("")
async def list_activations(
    request: Request,
    function: FunctionFilter = None,
    status: Status = None,
    minutes: Minutes = None,
) -> Response:
    """The namespace's newest activations that pass the filters (50 at most)."""
    ns = namespace(request)
    since = datetime.now(UTC) - timedelta(minutes=minutes) if minutes else None

    def wanted(record: ActivationRecord) -> bool:
        return (
            record.namespace == ns
            and (status is None or record.status is status)
            and (since is None or record.start >= since)
        )

    found = await state_of(request).activations.recent(
        limit=50, function=qualified(request, function) if function else None, where=wanted
    )
    return fragment(request, "activations_list.html", records=[api.local(r) for r in found])


@router.get("/{activation_id}")
async def show_activation(request: Request, activation_id: ActivationId) -> Response:
    """One activation: status, result, logs, timing (wait, init, run), cause and output."""
    record = api.local(await api.own_record(request, activation_id))
    return fragment(request, "activation_detail.html", record=record)
