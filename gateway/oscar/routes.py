"""OSCAR's service API, the subset its `oscar-python` client uses, on our objects.

`/system/info`, `/system/config`, `/system/services` (a service is a script function plus one
trigger per input), `/run/{service}` (sync), `/job/{service}` (async: 201 and the activation
id in `X-Activation-Id`), `/system/logs/{service}` (its jobs: the async activations) and
`/system/logs/{service}/{job}`. Errors are plain text as OSCAR writes them (auth failures stay
problems, as on every route). Everything is the caller's namespace's: another namespace's
service is not found. `/run` and `/job` also take the service's own token as a Bearer token.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import platform
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from nats.js.errors import KeyNotFoundError

from eventbus.errors import (
    BucketTakenError,
    ConflictError,
    DeepfaasError,
    NotFoundError,
    ValidationFailedError,
)
from eventbus.namespaces import belongs, local_name, qualify
from eventbus.storage.errors import BucketExistsError
from eventbus.streams import ACTIVATIONS_KV
from eventbus.triggers import TriggerStore
from gateway.auth.errors import ForbiddenError
from gateway.oscar import fdl
from gateway.oscar.store import ServiceStore, new_token
from gateway.state import GatewayState, state_of
from runtimes.types import ActivationRecord, ActivationStatus

router = APIRouter(tags=["oscar"])
VERSION: Final = "deepfaas-0.1.0"
_LOG_PREFIX = re.compile(r"^\S+ (stdout|stderr): ")
_JOB_STATUS: Final = {
    ActivationStatus.RUNNING: "Running",
    ActivationStatus.RETRYING: "Pending",
    ActivationStatus.SUCCESS: "Succeeded",
}
TEXT: Final = {"text/plain": {"schema": {"type": "string"}}}
SERVICE_BODY: Final = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "an OSCAR FDL service",
                    "required": ["name", "image", "script"],
                    "properties": {
                        "name": {"type": "string", "pattern": fdl.SERVICE_NAME_PATTERN},
                        "image": {"type": "string", "minLength": 1},
                        "script": {"type": "string", "minLength": 1},
                    },
                }
            }
        },
    }
}
RAW_BODY: Final = {
    "requestBody": {
        "required": False,
        "content": {"application/octet-stream": {"schema": {"type": "string"}}},
    }
}


class OscarError(DeepfaasError):
    """An answer OSCAR gives as a status and plain text."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message or "error")
        self.status = status
        self.text = message


def _text(status: int, message: str = "") -> Response:
    return PlainTextResponse(message, status_code=status)


def plain_errors(
    handler: Callable[..., Awaitable[Response]],
) -> Callable[..., Awaitable[Response]]:
    """Answer our errors as OSCAR does: a status and plain text (an empty 404)."""

    @functools.wraps(handler)
    async def wrapped(*args: Any, **kwargs: Any) -> Response:
        try:
            return await handler(*args, **kwargs)
        except OscarError as exc:
            return _text(exc.status, exc.text)
        except NotFoundError:
            return _text(404)
        except (BucketTakenError, ForbiddenError) as exc:
            return _text(403, exc.message)
        except ConflictError as exc:
            return _text(409, exc.message)
        except ValidationFailedError as exc:
            return _text(400, exc.message)

    return wrapped


async def _body_json(request: Request) -> Any:
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise OscarError(400, f"The service specification is not valid: {exc}") from exc


def _principal_ns(request: Request) -> str:
    principal = getattr(request.state, "principal", None)
    if principal is None:
        raise OscarError(401)
    return str(principal.namespace)


def _name(service: str) -> str:
    if not re.match(fdl.SERVICE_NAME_PATTERN, service):
        raise NotFoundError(f"no service {service!r}")
    return service


async def _doc(request: Request, service: str) -> tuple[str, dict[str, Any]]:
    name = qualify(_principal_ns(request), _name(service))
    doc = await ServiceStore(state_of(request).bus).get(name)
    if doc is None:
        raise NotFoundError(f"no service {service!r}")
    return name, doc


def _shown(doc: dict[str, Any]) -> dict[str, Any]:
    """A service as OSCAR lists it: the FDL, its token, its storage provider (no secrets)."""
    service = dict(doc["service"])
    env = dict(service.get("environment") or {})
    if env.get("secrets"):
        env["secrets"] = {key: "" for key in env["secrets"]}
    service["environment"] = env
    service["token"] = doc["token"]
    service["storage_providers"] = {"minio": {"default": _minio_provider()}}
    return service


def _minio_provider() -> dict[str, Any]:
    # The platform's store has no S3 endpoint of its own with the local backend: uploads go
    # through /v1/buckets. Credentials are never given out here.
    return {"endpoint": "", "verify": True, "access_key": "", "secret_key": "", "region": ""}


@router.get("/system/info", responses={200: {"description": "the cluster's version"}})
async def info(request: Request) -> Response:
    """What OSCAR's info says: versions and the serverless backend."""
    return JSONResponse(
        {
            "version": VERSION,
            "git_commit": "",
            "architecture": platform.machine(),
            "kubernetes_version": "",
            "serverless_backend": {"name": "deepfaas", "version": "0.1.0"},
        }
    )


@router.get("/system/config", responses={200: {"description": "the cluster's configuration"}})
async def config(request: Request) -> Response:
    """The configuration a client reads, without secrets."""
    ns = _principal_ns(request)
    state = state_of(request)
    return JSONResponse(
        {
            "config": {
                "name": "deepfaas",
                "namespace": ns,
                "services_namespace": ns,
                "gpu_available": True,
                "interLink_available": False,
                "yunikorn_enable": False,
                "oidc_groups": [],
                "storage_backend": state.settings.storage_backend,
            },
            "minio_provider": _minio_provider(),
            "allowed_image_repositories": [],
        }
    )


@router.get("/system/services", responses={200: {"description": "the namespace's services"}})
@plain_errors
async def list_services(request: Request) -> Response:
    """Every service of the caller's namespace."""
    ns = _principal_ns(request)
    store = ServiceStore(state_of(request).bus)
    shown = []
    for name in await store.names():
        doc = await store.get(name) if belongs(name, ns) else None
        if doc is not None:
            shown.append(_shown(doc))
    return JSONResponse(shown)


@router.post(
    "/system/services",
    status_code=201,
    openapi_extra=SERVICE_BODY,
    responses={201: {"description": "created"}, 400: {"content": TEXT}, 409: {"content": TEXT}},
)
@plain_errors
async def create_service(request: Request) -> Response:
    """Create a service from its FDL definition; 409 when the name is taken."""
    ns = _principal_ns(request)
    service = fdl.parse(await _body_json(request))
    await _apply(request, ns, service, create=True)
    return Response(status_code=201)


@router.put(
    "/system/services",
    status_code=204,
    openapi_extra=SERVICE_BODY,
    responses={204: {"description": "updated"}, 400: {"content": TEXT}},
)
@plain_errors
async def update_service(request: Request) -> Response:
    """Replace a service (named by the body) with a new definition."""
    ns = _principal_ns(request)
    service = fdl.parse(await _body_json(request))
    await _doc(request, service.name)
    await _apply(request, ns, service, create=False)
    return Response(status_code=204)


async def _apply(request: Request, ns: str, service: fdl.Service, *, create: bool) -> None:
    state = state_of(request)
    name = qualify(ns, service.name)
    store = ServiceStore(state.bus)
    old = await store.get(name)
    if create and old is not None:
        raise OscarError(409, "A service with the provided name already exists")
    spec = fdl.function_spec(service, ns)
    new_triggers = fdl.triggers(service, ns)
    for bucket in fdl.buckets(service):
        await _ensure_bucket(state, bucket, ns)
    try:
        spec = await state.registry.put(spec, create_only=create)
    except ConflictError as exc:
        raise OscarError(409, "A service with the provided name already exists") from exc
    state.cache.remember(spec)
    triggers = TriggerStore(state.bus)
    for index in range(len(service.input), len(old["service"].get("input", [])) if old else 0):
        with contextlib.suppress(NotFoundError):
            await triggers.delete(qualify(ns, fdl.trigger_name(service.name, index)))
    for trigger in new_triggers:
        await triggers.put(trigger)
    doc = {
        "service": service.model_dump(mode="json"),
        "token": old["token"] if old else new_token(),
        "created": old["created"] if old else datetime.now(UTC).isoformat(),
    }
    await store.put(name, doc)


async def _ensure_bucket(state: GatewayState, bucket: str, ns: str) -> None:
    """The bucket is the namespace's (claimed now if nobody holds it) and exists."""
    try:
        await state.buckets.ensure_writable(bucket, ns, state.storage)
    except BucketTakenError as exc:
        raise OscarError(403, f"bucket {bucket!r} belongs to another namespace") from exc
    if not await state.storage.bucket_exists(bucket):
        with contextlib.suppress(BucketExistsError):
            await state.storage.create_bucket(bucket)


@router.get("/system/services/{service}", responses={200: {"description": "the service"}})
@plain_errors
async def get_service(request: Request, service: str) -> Response:
    """One service, with its token."""
    _, doc = await _doc(request, service)
    return JSONResponse(_shown(doc))


@router.delete("/system/services/{service}", status_code=204)
@plain_errors
async def delete_service(request: Request, service: str) -> Response:
    """Delete the service: its function and triggers (its buckets and their objects stay)."""
    name, doc = await _doc(request, service)
    state = state_of(request)
    ns = _principal_ns(request)
    triggers = TriggerStore(state.bus)
    for index in range(len(doc["service"].get("input", []))):
        with contextlib.suppress(NotFoundError):
            await triggers.delete(qualify(ns, fdl.trigger_name(service, index)))
    with contextlib.suppress(NotFoundError):
        await state.registry.delete(name)
    state.cache.forget(name)
    await ServiceStore(state.bus).delete(name)
    return Response(status_code=204)


async def _invoked(request: Request, service: str) -> str:
    """The internal name of the service a `/run` or `/job` call may invoke."""
    principal = getattr(request.state, "principal", None)
    _name(service)
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


@router.post(
    "/run/{service}",
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
    openapi_extra=RAW_BODY,
    responses={201: {"description": "queued; the activation id is in X-Activation-Id"}},
)
@plain_errors
async def job(request: Request, service: str) -> Response:
    """Queue a run of the service with the body as its input."""
    state = state_of(request)
    spec = state.cache.get(await _invoked(request, service))
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
    name, _ = await _doc(request, service)
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
    name, _ = await _doc(request, service)
    if not re.match(r"^[A-Za-z0-9_-]{1,64}$", job_id):
        raise NotFoundError(f"no job {job_id!r}")
    record = await state_of(request).activations.get(job_id)
    if record.function != name:
        raise NotFoundError(f"no job {job_id!r}")
    return record


@router.get(
    "/system/logs/{service}/{job_id}",
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
    kv = await state_of(request).bus.js.key_value(ACTIVATIONS_KV)
    with contextlib.suppress(KeyNotFoundError):
        await kv.delete(activation_id)
