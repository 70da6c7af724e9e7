"""/v1/activations: records of invocations, their logs and results."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from gateway.models import ActivationResult, ActivationSummary
from gateway.state import state_of
from runtimes.types import ActivationRecord, ActivationStatus

router = APIRouter(prefix="/v1/activations", tags=["activations"])


@router.get("", response_model=list[ActivationSummary])
async def list_activations(
    request: Request,
    function: Annotated[str | None, Query(description="only this function's")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 30,
) -> list[ActivationRecord]:
    """The newest activations first."""
    return await state_of(request).activations.recent(limit=limit, function=function)


@router.get("/{activation_id}", response_model=ActivationRecord)
async def get_activation(request: Request, activation_id: str) -> ActivationRecord:
    """One activation record (404 until a worker has started it)."""
    return await state_of(request).activations.get(activation_id)


@router.get("/{activation_id}/logs")
async def get_logs(request: Request, activation_id: str) -> dict[str, list[str]]:
    """The log lines the activation printed or logged."""
    record = await state_of(request).activations.get(activation_id)
    return {"logs": record.logs}


@router.get("/{activation_id}/result", response_model=ActivationResult)
async def get_result(request: Request, activation_id: str) -> ActivationResult:
    """The activation's result and whether it succeeded."""
    record = await state_of(request).activations.get(activation_id)
    return ActivationResult(
        id=record.id,
        status=record.status,
        success=record.status is ActivationStatus.SUCCESS,
        result=record.result,
        error=record.error,
    )
