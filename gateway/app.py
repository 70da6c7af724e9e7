"""The ASGI application: the native `/v1` API, health, metrics and the OpenAPI docs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from eventbus.buckets import BucketOwners
from eventbus.connection import Bus
from eventbus.errors import DeepfaasError
from eventbus.kv import KVMirror
from eventbus.loop import freeze_startup
from eventbus.storage.settings import create_storage
from eventbus.streams import ensure_layout
from gateway import console, openapi, openwhisk, oscar, problems
from gateway.auth.authenticator import Authenticator
from gateway.auth.keys import KeyStore
from gateway.auth.middleware import AuthMiddleware
from gateway.auth.oidc import OidcVerifier
from gateway.auth.quota import Quotas
from gateway.cache import FunctionCache
from gateway.deepaas import entry as deepaas
from gateway.deepaas import models
from gateway.invoker import Invoker
from gateway.limits import BodyLimit
from gateway.metrics import Metrics
from gateway.openwhisk.alarm_fires import AlarmFires
from gateway.openwhisk.sequences import SequenceKeeper
from gateway.routes import (
    activations,
    auth_keys,
    batch,
    catalog,
    deployments,
    docs,
    events,
    functions,
    ingest,
    invoke,
    ops,
    runtimes,
    storage,
    subscriptions,
    triggers,
)
from gateway.settings import GatewaySettings
from gateway.state import GatewayState
from runtimes.activations import ActivationStore
from runtimes.catalog.store import MODULE_PREFIX
from runtimes.catalog.types import CATALOG_KV, Module
from runtimes.specs import FunctionRegistry

log = logging.getLogger(__name__)


def create_app(settings: GatewaySettings | None = None, *, freeze_gc: bool = False) -> FastAPI:
    """Build the gateway; it connects to NATS when the server starts it. ``freeze_gc`` (a
    process that serves it: `deepfaas up`, `deepfaas gateway`) takes what its start-up loaded
    out of the garbage collector's full passes (`eventbus.loop.freeze_startup`)."""
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bus = await Bus.connect(
            settings.nats_url,
            name="gateway",
            prefix=settings.event_prefix,
            auth=settings.bus_auth("gateway"),
            # refuse (503) while disconnected: nothing a caller was refused is sent later
            buffer_while_disconnected=False,
        )
        await ensure_layout(bus.js, settings.layout(settings.data_dir), private=True)
        cache = FunctionCache(bus)
        await cache.start()
        metrics = Metrics()
        await metrics.start(bus)
        store = create_storage(settings)
        keys = KeyStore(bus)
        await keys.start()
        buckets = BucketOwners(bus)
        await buckets.start()
        modules = KVMirror(bus, CATALOG_KV, MODULE_PREFIX, Module)
        await modules.start()
        app.state.auth = Authenticator(
            keys,
            OidcVerifier(settings) if settings.oidc_issuer else None,
            Quotas(settings.ns_rate_per_s, settings.ns_burst, settings.ns_concurrency),
        )
        app.state.gateway = GatewayState(
            settings=settings,
            bus=bus,
            registry=FunctionRegistry(bus),
            activations=ActivationStore(bus),
            cache=cache,
            invoker=Invoker(bus),
            metrics=metrics,
            storage=store,
            buckets=buckets,
            modules=modules,
        )
        alarms = AlarmFires(app)  # OpenWhisk triggers fired by their alarms' ticks
        await alarms.start()
        sequences = app.state.sequences = SequenceKeeper(app, hold_s=settings.sequence_hold_s)
        await sequences.start()
        if freeze_gc:
            freeze_startup()
        try:
            yield
        finally:
            await alarms.stop()  # first: a late alarm fire would start a sequence
            await sequences.stop()
            await modules.stop()
            await buckets.stop()
            await keys.stop()
            await store.close()
            await metrics.stop()
            await cache.stop()
            await bus.close()

    app = FastAPI(
        title="deepfaas",
        version="0.1.0",
        summary="Event-driven serverless functions for machine-learning work",
        lifespan=lifespan,
        docs_url=None,  # served by `routes.docs` from the package's assets, never a CDN
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.openapi = openapi.create_openapi(app)  # type: ignore[method-assign]
    app.add_exception_handler(DeepfaasError, problems.deepfaas_error_handler)
    app.add_exception_handler(RequestValidationError, problems.validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, problems.http_error_handler)
    app.add_exception_handler(orjson.JSONEncodeError, problems.json_encode_error_handler)
    app.add_exception_handler(Exception, problems.unexpected_error_handler)
    routers = (
        functions,
        invoke,
        batch,
        activations,
        events,
        ingest,
        subscriptions,
        triggers,
        storage,
        runtimes,
        deployments,
        catalog,
        models,
        deepaas,
        docs,
    )
    for module in (*routers, ops):
        app.include_router(module.router)
    # innermost: the plainest invokes skip FastAPI's routing (after auth and the body limit)
    app.add_middleware(invoke.InvokeFastPath)
    app.add_middleware(
        BodyLimit, max_bytes=settings.max_body_bytes, exempt_prefixes=("/v1/buckets",)
    )
    app.include_router(auth_keys.router)
    app.include_router(oscar.router)
    for ow_router in openwhisk.ROUTERS:
        app.include_router(ow_router)
    app.add_middleware(AuthMiddleware)
    for console_router in console.ROUTERS:  # `/ui`: pages, and fragments under `/ui/x`
        app.include_router(console_router)
    app.add_middleware(openwhisk.OpenWhiskErrors)  # outermost: `/api/v1` errors as OpenWhisk's
    return app
