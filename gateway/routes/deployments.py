"""/v1/deployments: runtimes placed across the sites by the `deploy` function.

Creating and deleting go through the bus as invocations of `deploy` (202 with the activation
id; poll `/v1/activations/{id}`); reading is the `deployments` KV bucket. A template is parsed
here first (offline, local imports only), so a bad one gets a 422 problem before any work.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from eventbus.failover import RETRY_AFTER_S
from eventbus.namespaces import QUALIFIED_NAME_PATTERN
from gateway.problems import STATUS_BY_CODE, problem
from gateway.routes.invoke import sync_response
from gateway.state import state_of
from runtimes.placement.deployments import DeploymentRecord, DeploymentStore
from runtimes.placement.ranking import Preferences
from runtimes.placement.requests import Constraints, DeployInput, to_spec
from runtimes.types import ActivationStatus, RuntimeSpec

router = APIRouter(prefix="/v1/deployments", tags=["deployments"])
NamePath = Path(pattern=QUALIFIED_NAME_PATTERN, description="deployment name")
DEPLOY = "deploy"
SOURCES = ("template", "template_path", "spec")
#: the control plane's refusals that a waiting caller gets as their own problem, by title: no
#: site can take the runtime now (503, try later) or every site tried failed (502: the sites',
#: not a function's failure); either way the deployment is recorded as failed with the reason
REFUSALS = {
    "no_capacity": "No capacity",
    "placement_failed": "Placement failed",
    "credentials": "Placement failed",
    "provisioning_failed": "Placement failed",
}


def _one_source(schema: dict[str, Any]) -> None:
    """The schema says what the validator checks: exactly one source, none of them null."""
    props = schema.get("properties", {})
    for field in SOURCES:
        kinds = props.get(field, {}).pop("anyOf", None)
        if kinds:
            props[field].update(next(k for k in kinds if k.get("type") != "null"))
            props[field].pop("default", None)
    schema["oneOf"] = [{"required": [field]} for field in SOURCES]


class DeploymentIn(BaseModel):
    """A deployment to create or update: exactly one of `template`, `template_path`, `spec`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_one_source)

    action: Literal["create", "update"] = "create"
    name: str | None = Field(default=None, pattern=QUALIFIED_NAME_PATTERN)
    template: str | None = Field(default=None, description="TOSCA template YAML text")
    template_path: str | None = Field(
        default=None, description="a template file under infra/tosca/templates"
    )
    inputs: dict[str, Any] = Field(default_factory=dict, description="the template's inputs")
    spec: RuntimeSpec | None = None
    constraints: Constraints = Field(default_factory=Constraints)
    preferences: Preferences = Field(default_factory=Preferences)

    @model_validator(mode="after")
    def _exactly_one(self) -> DeploymentIn:
        given = [f for f in SOURCES if getattr(self, f) is not None]
        if len(given) != 1 or len([f for f in SOURCES if f in self.model_fields_set]) != 1:
            raise ValueError("give exactly one of template, template_path or spec (not null)")
        return self


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
    data = orjson.dumps(body)  # an integer past 64 bits: 422 (`problems.json_encode_error_handler`)
    spec = state.cache.get(DEPLOY)
    if wait is None:
        activation_id = await state.invoker.invoke_async(
            spec, data, content_type="application/json"
        )
        return _accepted(activation_id, name)
    outcome = await state.invoker.invoke_sync(
        spec, data, content_type="application/json", wait=min(wait, state.settings.sync_wait_s)
    )
    record = outcome.record
    if record is None:
        return _accepted(outcome.activation_id, name)
    if record.status is ActivationStatus.ERROR and record.error_code in REFUSALS:
        status = STATUS_BY_CODE[record.error_code]
        detail = (record.error or record.error_code).removeprefix("ControlPlaneError: ")
        response = problem(
            status, detail, kind=record.error_code.replace("_", "-"),
            title=REFUSALS[record.error_code], deployment=name,
            location=f"/v1/deployments/{name}", activation_id=record.id,
        )  # fmt: skip
        response.headers["x-activation-id"] = record.id
        if status == 503:
            response.headers["retry-after"] = str(RETRY_AFTER_S)
        return response
    return sync_response(record)


@router.post(
    "",
    status_code=202,
    responses={
        200: {"description": "with `wait`: the deployment is ready (the `deploy` result)"},
        404: {"description": "the `deploy` function is not registered"},
        422: {"description": "bad template or spec; constraints no configured site can meet"},
        502: {"description": "with `wait`: every site tried failed (the deployment's record "
              "says why)"},
        503: {"description": "with `wait`: no site has the capacity now (Retry-After)"},
    },
)  # fmt: skip
async def create_deployment(
    request: Request,
    body: DeploymentIn,
    wait: Annotated[float | None, Query(gt=0, le=3600, description="wait for the result")] = None,
) -> Response:
    """Create (or update) a deployment: 202 with the `deploy` activation id and its name."""
    checked = DeployInput.model_validate(body.model_dump(exclude_unset=True))
    spec, _ = to_spec(checked)  # TemplateError (422) before anything is queued
    name = checked.name or spec.name
    payload = {**checked.model_dump(mode="json", exclude_unset=True), "action": body.action,
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
