"""/v1/activations: records of invocations, their logs and results (the caller's namespace).

The list pages with a cursor: when more records may follow, the answer has a `Link` header
with `rel="next"` (and `X-Next-After`) whose `after` value continues below the last page.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from eventbus.errors import NotFoundError
from eventbus.namespaces import local_name
from gateway.auth.access import namespace, qualified
from gateway.bodies import ActivationResult, ActivationSummary
from gateway.params import MAX_NUMBER, ActivationId, FunctionFilter
from gateway.state import state_of
from runtimes.types import ActivationRecord, ActivationStatus

router = APIRouter(prefix="/v1/activations", tags=["activations"])


def local(record: ActivationRecord) -> ActivationRecord:
    """The record as its namespace sees it (the function's bare name)."""
    return record.model_copy(update={"function": local_name(record.function)})


async def own_record(request: Request, activation_id: str) -> ActivationRecord:
    """The caller's activation record; 404 for missing ones and for other namespaces' alike."""
    record = await state_of(request).activations.get(activation_id)
    if record.namespace != namespace(request):
        raise NotFoundError(
            f"activation {activation_id!r} does not exist", activation=activation_id
        )
    return record


NEXT_HEADERS = {
    "Link": {
        "description": 'the next page: `</v1/activations?after=N&...>; rel="next"` (absent on '
        "the last page)",
        "schema": {"type": "string"},
    },
    "X-Next-After": {
        "description": "the `after` value of the next page (absent on the last page)",
        "schema": {"type": "string"},
    },
}


@router.get(
    "",
    response_model=list[ActivationSummary],
    responses={200: {"headers": NEXT_HEADERS}},
)
async def list_activations(
    request: Request,
    response: Response,
    function: FunctionFilter = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 30,
    after: Annotated[
        int | None,
        Query(ge=1, le=MAX_NUMBER, description="the cursor from the previous page's `Link`"),
    ] = None,
) -> list[ActivationRecord]:
    """The newest activations first, `limit` at a time; `Link: <...>; rel="next"` pages on."""
    ns = namespace(request)
    found, cursor = await state_of(request).activations.page(
        limit=limit,
        function=qualified(request, function) if function else None,
        where=lambda r: r.namespace == ns,
        before=after,
    )
    if cursor is not None:
        query = {**request.query_params, "after": str(cursor)}
        url = request.url.replace_query_params(**query)
        response.headers["link"] = f'<{url.path}?{url.query}>; rel="next"'
        response.headers["x-next-after"] = str(cursor)
    return [local(r) for r in found]


@router.get("/{activation_id}", response_model=ActivationRecord)
async def get_activation(request: Request, activation_id: ActivationId) -> ActivationRecord:
    """One activation record (404 until a worker has started it)."""
    return local(await own_record(request, activation_id))


@router.get("/{activation_id}/logs")
async def get_logs(request: Request, activation_id: ActivationId) -> dict[str, list[str]]:
    """The log lines the activation printed or logged."""
    record = await own_record(request, activation_id)
    return {"logs": record.logs}


@router.get("/{activation_id}/result", response_model=ActivationResult)
async def get_result(request: Request, activation_id: ActivationId) -> ActivationResult:
    """The activation's result and whether it succeeded."""
    record = await own_record(request, activation_id)
    return ActivationResult(
        id=record.id,
        status=record.status,
        success=record.status is ActivationStatus.SUCCESS,
        result=record.result,
        error=record.error,
    )
