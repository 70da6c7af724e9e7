"""/v1/deployments: runtimes placed across the sites by the `deploy` function.

Creating and deleting go through the bus as invocations of `deploy` (202 with the activation
id; poll `/v1/activations/{id}`); reading is the `deployments` KV bucket. A template is parsed
here first (offline, local imports only), so a bad one gets a 422 problem before any work.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request, Response

from eventbus.namespaces import QUALIFIED_NAME_PATTERN
from functions.deploy.handler import to_spec
from functions.deploy.models import DeployInput
from gateway.routes.invoke import sync_response
from gateway.state import state_of
from runtimes.deployments import DeploymentRecord, DeploymentStore

router = APIRouter(prefix="/v1/deployments", tags=["deployments"])
NamePath = Path(pattern=QUALIFIED_NAME_PATTERN, description="deployment name")
DEPLOY = "deploy"


def _accepted(activation_id: str, name: str) -> Response:
    location = f"/v1/activations/{activation_id}"
    body = {"activation_id": activation_id, "deployment": name, "status": "accepted",
            "location": location}  # fmt: skip
    return Response(orjson.dumps(body), status_code=202, media_type="application/json",
                    headers={"location": location, "x-activation-id": activation_id})  # fmt: skip


async def _invoke(
    request: Request, body: dict[str, Any], name: str, wait: float | None
) -> Response:
    state = state_of(request)
    spec = state.cache.get(DEPLOY)
    data = orjson.dumps(body)
    if wait is None:
        activation_id = await state.invoker.invoke_async(
            spec, data, content_type="application/json"
        )
        return _accepted(activation_id, name)
    outcome = await state.invoker.invoke_sync(
        spec, data, content_type="application/json", wait=min(wait, state.settings.sync_wait_s)
    )
    if outcome.record is None:
        return _accepted(outcome.activation_id, name)
    return sync_response(outcome.record)


@router.post("", status_code=202, responses={422: {"description": "bad template or spec"}})
async def create_deployment(
    request: Request,
    body: DeployInput,
    wait: Annotated[float | None, Query(gt=0, le=3600, description="wait for the result")] = None,
) -> Response:
    """Create (or update) a deployment: 202 with the `deploy` activation id and its name."""
    action = body.action if body.action in ("create", "update") else "create"
    checked = DeployInput.model_validate({**body.model_dump(exclude_unset=True), "action": action})
    spec, _ = to_spec(checked)  # TemplateError (422) before anything is queued
    name = checked.name or spec.name
    payload = {**checked.model_dump(mode="json", exclude_unset=True), "action": action,
               "name": name}  # fmt: skip
    return await _invoke(request, payload, name, wait)


@router.get("", response_model=list[DeploymentRecord])
async def list_deployments(request: Request) -> list[DeploymentRecord]:
    """Every deployment record."""
    return await DeploymentStore(state_of(request).bus).list()


@router.get("/{name}", response_model=DeploymentRecord)
async def get_deployment(request: Request, name: str = NamePath) -> DeploymentRecord:
    """One deployment: desired and actual state, and the sites tried."""
    return await DeploymentStore(state_of(request).bus).get(name)


@router.delete("/{name}", status_code=202)
async def delete_deployment(
    request: Request,
    name: str = NamePath,
    wait: Annotated[float | None, Query(gt=0, le=3600, description="wait for the result")] = None,
) -> Response:
    """Undeploy: release the runtime (a `runtime.released` event); the record stays, released."""
    await DeploymentStore(state_of(request).bus).get(name)  # 404 when unknown
    return await _invoke(request, {"action": "delete", "name": name}, name, wait)
