"""OSCAR's `/system/info`, `/system/config` and `/system/services` on our objects.

A service is a script function (`runtimes/worker/script.py`) plus one trigger per input; its buckets
are claimed for the caller's namespace and created as OSCAR creates them. Another namespace's
service is not found.
"""

from __future__ import annotations

import contextlib
import platform
from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from eventbus.errors import (
    BucketTakenError,
    ConflictError,
    NotFoundError,
)
from eventbus.namespaces import belongs, qualify
from eventbus.storage.errors import BucketExistsError
from eventbus.triggers import TriggerStore
from gateway.oscar import fdl
from gateway.oscar.common import (
    SERVICE_BODY,
    TEXT,
    VERSION,
    OscarError,
    body_json,
    caller_namespace,
    minio_provider,
    plain_errors,
    service_doc,
    service_view,
)
from gateway.oscar.store import ServiceStore, new_token
from gateway.state import GatewayState, state_of

router = APIRouter(tags=["oscar"])


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
    ns = caller_namespace(request)
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
            "minio_provider": minio_provider(state.settings),
            "allowed_image_repositories": [],
        }
    )


@router.get("/system/services", responses={200: {"description": "the namespace's services"}})
@plain_errors
async def list_services(request: Request) -> Response:
    """Every service of the caller's namespace."""
    ns = caller_namespace(request)
    store = ServiceStore(state_of(request).bus)
    shown = []
    for name in await store.names():
        doc = await store.get(name) if belongs(name, ns) else None
        if doc is not None:
            shown.append(service_view(doc, state_of(request).settings))
    return JSONResponse(shown)


@router.post(
    "/system/services",
    status_code=201,
    response_class=Response,
    openapi_extra=SERVICE_BODY,
    responses={201: {"description": "created"}, 400: {"content": TEXT}, 409: {"content": TEXT}},
)
@plain_errors
async def create_service(request: Request) -> Response:
    """Create a service from its FDL definition; 409 when the name is taken."""
    ns = caller_namespace(request)
    service = fdl.parse(await body_json(request))
    await _apply(request, ns, service, create=True)
    return Response(status_code=201)


@router.put(
    "/system/services",
    status_code=204,
    response_class=Response,
    openapi_extra=SERVICE_BODY,
    responses={
        204: {"description": "updated"},
        400: {"content": TEXT},
        404: {"description": "no such service", "content": TEXT},
    },
)
@plain_errors
async def update_service(request: Request) -> Response:
    """Replace a service (named by the body) with a new definition."""
    ns = caller_namespace(request)
    service = fdl.parse(await body_json(request))
    await service_doc(request, service.name)
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
    _, doc = await service_doc(request, service)
    return JSONResponse(service_view(doc, state_of(request).settings))


@router.delete("/system/services/{service}", status_code=204)
@plain_errors
async def delete_service(request: Request, service: str) -> Response:
    """Delete the service: its function and triggers (its buckets and their objects stay)."""
    name, doc = await service_doc(request, service)
    state = state_of(request)
    ns = caller_namespace(request)
    triggers = TriggerStore(state.bus)
    for index in range(len(doc["service"].get("input", []))):
        with contextlib.suppress(NotFoundError):
            await triggers.delete(qualify(ns, fdl.trigger_name(service, index)))
    with contextlib.suppress(NotFoundError):
        await state.registry.delete(name)
    state.cache.forget(name)
    await ServiceStore(state.bus).delete(name)
    return Response(status_code=204)
