"""A stand-in OpenWhisk API on loopback that follows the published request/response shapes.

It answers what the OpenWhisk REST API documents (apache/openwhisk `core/controller` swagger,
`docs/rest_api.md`): Basic auth `uuid:key`; `PUT .../actions/{name}?overwrite=true` returns the
action document with a `version`; `GET` returns it or 404 `{"error": ..., "code": ...}`;
`DELETE` returns the deleted action; `POST .../actions/{name}?blocking=&result=` returns the
activation (200), its result only (`result=true`), or `{"activationId": ...}` (202);
`GET .../activations/{id}` returns the activation record. It does not depend on our own
OpenWhisk-compatible API (`gateway/openwhisk/`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from eventbus.server import free_port
from tests.support import eventually

AUTH = "0f4d6c1e-test-uuid:not-a-real-key-only-for-the-stand-in"


@dataclass
class StandIn:
    """State of the stand-in, and switches a test flips to make it fail."""

    url: str = ""
    actions: dict[str, dict[str, Any]] = field(default_factory=dict)
    activations: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail_with: int | None = None
    requests: list[tuple[str, str]] = field(default_factory=list)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "code": uuid.uuid4().hex}, status_code=status)


def create_app(state: StandIn) -> Starlette:
    """The stand-in's routes."""

    def authorised(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        return header == "Basic " + base64.b64encode(AUTH.encode()).decode()

    async def action(request: Request) -> JSONResponse:
        state.requests.append((request.method, request.url.path))
        if state.fail_with is not None:
            return _error(state.fail_with, "injected failure")
        if not authorised(request):
            return _error(401, "The supplied authentication is invalid")
        ns, name = request.path_params["ns"], request.path_params["name"]
        key = f"{ns}/{name}"
        if request.method == "PUT":
            doc = await request.json()
            if key in state.actions and request.query_params.get("overwrite") != "true":
                return _error(409, "resource already exists")
            if "exec" not in doc:
                return _error(400, "exec undefined")
            version = "0.0.1"
            if key in state.actions:
                major, minor, patch = state.actions[key]["version"].split(".")
                version = f"{major}.{minor}.{int(patch) + 1}"
            state.actions[key] = {**doc, "namespace": "guest", "name": name, "version": version}
            return JSONResponse(state.actions[key])
        if key not in state.actions:
            return _error(404, "The requested resource does not exist.")
        if request.method == "GET":
            return JSONResponse(state.actions[key])
        if request.method == "DELETE":
            return JSONResponse(state.actions.pop(key))
        params = await request.json()
        activation_id = uuid.uuid4().hex
        record = {"activationId": activation_id, "name": name, "namespace": "guest",
                  "response": {"status": "success", "statusCode": 0, "success": True,
                               "result": {"echo": params}}}  # fmt: skip
        state.activations[activation_id] = record
        if request.query_params.get("blocking") != "true":
            return JSONResponse({"activationId": activation_id}, status_code=202)
        if request.query_params.get("result") == "true":
            return JSONResponse(record["response"]["result"])
        return JSONResponse(record)

    async def activation(request: Request) -> JSONResponse:
        if not authorised(request):
            return _error(401, "The supplied authentication is invalid")
        found = state.activations.get(request.path_params["id"])
        return (
            JSONResponse(found) if found else _error(404, "The requested resource does not exist.")
        )

    base = "/api/v1/namespaces/{ns}"
    return Starlette(routes=[
        Route(base + "/actions/{name}", action, methods=["GET", "PUT", "POST", "DELETE"]),
        Route(base + "/activations/{id}", activation, methods=["GET"]),
    ])  # fmt: skip


@contextlib.asynccontextmanager
async def serve() -> AsyncIterator[StandIn]:
    """Run the stand-in on 127.0.0.1 and a free port for the block's duration."""
    state = StandIn()
    port = free_port()
    config = uvicorn.Config(create_app(state), host="127.0.0.1", port=port, log_level="warning",
                            lifespan="off")  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await eventually(lambda: server.started)
    state.url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        server.should_exit = True
        await task
