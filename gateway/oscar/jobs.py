"""OSCAR's `/run` (sync), `/job` (async: 201 and `X-Activation-Id`) and `/system/logs`.

A job is an async activation of the service's function. `/run` and `/job` take a key, an
OIDC token, or the service's own token (64 hex, as OSCAR gives in the service's `token`).
"""

from __future__ import annotations

import contextlib
import hmac
import re
from collections.abc import AsyncIterator
from typing import Any, Final

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from nats.js.errors import KeyNotFoundError

from eventbus.errors import (
    NotFoundError,
)
from eventbus.namespaces import local_name, namespace_of, qualify
from eventbus.streams import ACTIVATIONS_KV
from gateway.auth.quota import Quotas
from gateway.oscar.common import (
    RAW_BODY,
    TEXT,
    OscarError,
    plain_errors,
    service_doc,
    service_name,
)
from gateway.oscar.store import ServiceStore
from gateway.state import state_of
from runtimes.types import ActivationRecord, ActivationStatus

router = APIRouter(tags=["oscar"])
_LOG_PREFIX = re.compile(r"^\S+ (stdout|stderr): ")
_JOB_STATUS: Final = {
    ActivationStatus.RUNNING: "Running",
    ActivationStatus.RETRYING: "Pending",
    ActivationStatus.SUCCESS: "Succeeded",
}


async def _invoked(request: Request, service: str) -> str:
    """The internal name of the service a `/run` or `/job` call may invoke."""
    principal = getattr(request.state, "principal", None)
    service_name(service)
    if principal is not None:
        name = qualify(principal.namespace, service)
        if await ServiceStore(state_of(request).bus).get(name) is None:
            raise NotFoundError(f"no service {service!r}")
        return name
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise OscarError(401)
    name_of_token = await ServiceStore(state_of(request).bus).by_token(token)
    if name_of_token is None or not hmac.compare_digest(local_name(name_of_token), service):
        raise OscarError(401)
    return name_of_token


@contextlib.asynccontextmanager
async def _limits(request: Request, name: str) -> AsyncIterator[None]:
    """The namespace's limits, as on every invocation: its rate (the middleware took it when
    a key or token named the caller, not for a service's token) and its runs at once."""
    quotas: Quotas = request.app.state.auth.quotas
    ns = namespace_of(name)
    if getattr(request.state, "principal", None) is None and quotas.take(ns) > 0:
        raise OscarError(429, f"namespace {ns!r} is over its rate limit")
    if not quotas.enter(ns):
        raise OscarError(429, f"namespace {ns!r} has {quotas.concurrency} invocations in flight")
    try:
        yield
    finally:
        quotas.leave(ns)


@router.post(
    "/run/{service}",
    response_class=PlainTextResponse,
    openapi_extra=RAW_BODY,
    responses={
        200: {
            "description": "the script's output (or its one output file, base64)",
            "content": TEXT,
        },
        202: {
            "description": "still running after the wait: the activation id is in X-Activation-Id"
        },
        502: {"description": "the script failed", "content": TEXT},
    },
)
@plain_errors
async def run(request: Request, service: str) -> Response:
    """Run the service synchronously with the body as its input."""
    state = state_of(request)
    spec = state.cache.get(await _invoked(request, service))
    async with _limits(request, spec.name):
        outcome = await state.invoker.invoke_sync(
            spec,
            await request.body(),
            content_type="application/octet-stream",
            wait=state.settings.sync_wait_s,
        )
    headers = {"x-activation-id": outcome.activation_id}
    record = outcome.record
    if record is None:
        return Response(status_code=202, headers=headers)
    if record.status is ActivationStatus.SUCCESS:
        result = record.result
        text = result if isinstance(result, str) else orjson.dumps(result).decode()
        return PlainTextResponse(text, headers=headers)
    return PlainTextResponse(record.error or "the script failed", status_code=502, headers=headers)


@router.post(
    "/job/{service}",
    status_code=201,
    response_class=Response,
    openapi_extra=RAW_BODY,
    responses={201: {"description": "queued; the activation id is in X-Activation-Id"}},
)
@plain_errors
async def job(request: Request, service: str) -> Response:
    """Queue a run of the service with the body as its input."""
    state = state_of(request)
    spec = state.cache.get(await _invoked(request, service))
    async with _limits(request, spec.name):
        activation_id = await state.invoker.invoke_async(
            spec, await request.body(), content_type="application/octet-stream"
        )
    return Response(status_code=201, headers={"x-activation-id": activation_id})


def _job_info(record: ActivationRecord) -> dict[str, Any]:
    return {
        "status": _JOB_STATUS.get(record.status, "Failed"),
        "creation_time": (record.accepted or record.start).isoformat(),
        "start_time": record.start.isoformat(),
        "finish_time": record.end.isoformat() if record.end else None,
    }


async def _jobs(request: Request, service: str) -> tuple[str, list[ActivationRecord]]:
    name, _ = await service_doc(request, service)
    found = await state_of(request).activations.recent(
        limit=200, function=name, where=lambda r: r.mode == "async"
    )
    return name, found


@router.get("/system/logs/{service}", responses={200: {"description": "the service's jobs"}})
@plain_errors
async def list_jobs(request: Request, service: str) -> Response:
    """The service's jobs (its async runs, newest 200) and their status."""
    _, found = await _jobs(request, service)
    return JSONResponse({"jobs": {r.id: _job_info(r) for r in found}})


@router.delete("/system/logs/{service}", status_code=204)
@plain_errors
async def delete_jobs(request: Request, service: str) -> Response:
    """Forget the service's finished jobs."""
    _, found = await _jobs(request, service)
    for record in found:
        if record.status.terminal:
            await _forget(request, record.id)
    return Response(status_code=204)


async def _job(request: Request, service: str, job_id: str) -> ActivationRecord:
    name, _ = await service_doc(request, service)
    if not re.match(r"^[A-Za-z0-9_-]{1,64}$", job_id):
        raise NotFoundError(f"no job {job_id!r}")
    record = await state_of(request).activations.get(job_id)
    if record.function != name:
        raise NotFoundError(f"no job {job_id!r}")
    return record


@router.get(
    "/system/logs/{service}/{job_id}",
    response_class=PlainTextResponse,
    responses={200: {"description": "the job's logs", "content": TEXT}},
)
@plain_errors
async def job_logs(
    request: Request, service: str, job_id: str, timestamps: bool = False
) -> Response:
    """The job's output (stdout and stderr), then its error if it failed."""
    record = await _job(request, service, job_id)
    lines = record.logs if timestamps else [_LOG_PREFIX.sub("", line) for line in record.logs]
    if record.error:
        lines = [*lines, record.error]
    return PlainTextResponse("\n".join(lines) + ("\n" if lines else ""))


@router.delete("/system/logs/{service}/{job_id}", status_code=204)
@plain_errors
async def delete_job(request: Request, service: str, job_id: str) -> Response:
    """Forget a job (a running one goes on; its record comes back when it ends)."""
    record = await _job(request, service, job_id)
    await _forget(request, record.id)
    return Response(status_code=204)


async def _forget(request: Request, activation_id: str) -> None:
    kv = await state_of(request).bus.kv(ACTIVATIONS_KV)
    with contextlib.suppress(KeyNotFoundError):
        await kv.delete(activation_id)
