"""POST /v1/functions/{name}/invocations: up to 1,000 inputs in one request, each its own
asynchronous activation; JetStream stores them with pipelined acks before the 202."""

from __future__ import annotations

import math
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from eventbus.errors import DeepfaasError
from gateway.auth.access import namespace, qualified
from gateway.problems import problem
from gateway.state import state_of
from runtimes.types import FUNCTION_NAME_PATTERN

router = APIRouter(prefix="/v1/functions", tags=["invoke"])
MAX_BATCH = 1000


class BatchInvocation(BaseModel):
    """Inputs of a batch: each one becomes the JSON body of its own activation."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description=f"the function's inputs, 1 to {MAX_BATCH} JSON objects (its parameters); "
        "each runs as its own activation",
    )
    callback: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="URL that receives each activation's record when it completes",
    )


class BatchAccepted(BaseModel):
    """The activations a batch created, in the order of its inputs."""

    status: str = "accepted"
    count: int
    activation_ids: list[str]


class BatchNotQueuedError(DeepfaasError):
    """Some inputs of a batch were not stored; the ids that were are in the problem."""

    code = "unavailable"


@router.post(
    "/{name}/invocations",
    status_code=202,
    response_model=BatchAccepted,
    responses={
        202: {"description": "every input stored as its own async activation"},
        404: {"description": "unknown function"},
        413: {"description": "body over the limit"},
        422: {
            "description": "not an object with 1 to 1,000 `inputs`, or a callback at an "
            "address the platform does not send to"
        },
        429: {"description": "the batch is over the namespace's rate"},
        503: {"description": "the bus did not store every input (the stored ids are listed)"},
    },
)
async def invoke_batch(
    request: Request,
    name: Annotated[str, Path(pattern=FUNCTION_NAME_PATTERN)],
    batch: BatchInvocation,
) -> Response:
    """Queue one asynchronous activation per input; 202 with their ids."""
    state = state_of(request)
    spec = state.cache.get(qualified(request, name))
    if batch.callback is not None:
        state.settings.egress().check_literal(batch.callback)
    # an integer past 64 bits: 422 (`problems.json_encode_error_handler`)
    bodies = [orjson.dumps(value) for value in batch.inputs]
    # the auth middleware took one request from the namespace's rate: a batch costs one per input
    quotas = request.app.state.auth.quotas
    ns = namespace(request)
    extra = len(batch.inputs) - 1
    if extra > quotas.burst:
        return problem(
            422,
            f"a batch of {len(batch.inputs)} is over namespace {ns!r}'s burst of "
            f"{quotas.burst}: split it",
            kind="invalid",
        )
    wait = quotas.take(ns, extra) if extra else 0.0
    if wait > 0:
        response = problem(
            429, f"namespace {ns!r} is over its rate limit", kind="too-many-requests"
        )
        response.headers["retry-after"] = str(max(1, math.ceil(wait)))
        return response
    ids, failed = await state.invoker.invoke_batch(spec, bodies, callback=batch.callback)
    if failed:
        missing = set(failed)
        raise BatchNotQueuedError(
            f"{len(failed)} of {len(ids)} inputs were not queued (the bus did not answer): "
            "send those inputs again",
            activation_ids=[aid for index, aid in enumerate(ids) if index not in missing],
            failed_indexes=failed,
        )
    state.metrics.accepted.labels(spec.name, "async").inc(len(ids))
    body = BatchAccepted(count=len(ids), activation_ids=ids)
    return Response(body.model_dump_json(), status_code=202, media_type="application/json")
