"""/v2/models: the DEEPaaS v2 model API over the catalog and the `inference` function.

Clients of DEEPaaS work unchanged: list and describe models, predict from JSON (`data` as
base64) or a multipart upload (`data` file field), train asynchronously and poll. Plug-ins
installed in the gateway get their own documented routes so `/docs` shows their arguments.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, Field

from eventbus.errors import ValidationFailedError
from eventbus.namespaces import qualify
from gateway.auth.quota import Quotas
from gateway.auth.types import Principal
from gateway.deepaas import train as models_train
from gateway.deepaas.errors import DeepaasRoute, message
from gateway.deepaas.inputs import (
    inline_or_staged,
    installed_plugin,
    known_module,
    read_model_request,
    stage,
)
from gateway.routes.catalog import catalog_of
from gateway.state import state_of
from runtimes.catalog.plugins import MODEL_NAME_PATTERN, discover_models, load_model_plugin
from runtimes.catalog.requests import InferenceInput, as_form
from runtimes.catalog.types import Module
from runtimes.types import ActivationRecord, ActivationStatus

router = APIRouter(prefix="/v2/models", tags=["models"], route_class=DeepaasRoute)
Name = Annotated[str, Path(pattern=MODEL_NAME_PATTERN)]
INFERENCE = "inference"


class ModelLink(BaseModel):
    """A DEEPaaS link."""

    rel: str
    href: str


class ModelMeta(BaseModel, extra="allow"):
    """A model as DEEPaaS describes it: id, name, links, and its metadata (strings, as there)."""

    id: str
    name: str
    links: list[ModelLink]
    description: str = ""
    author: str = ""
    license: str = ""
    version: str = Field(default="", description="the promoted version ('' before the first)")
    url: str = Field(default="", description="the model's home page ('' when it has none)")


class ModelList(BaseModel):
    """`GET /v2/models/`."""

    models: list[ModelMeta]


class Prediction(BaseModel, extra="allow"):
    """A DEEPaaS prediction answer, with the version that made it."""

    status: str
    predictions: Any
    model: str
    version: int


def describe(module: Module) -> ModelMeta:
    """A catalog module in DEEPaaS's shape."""
    meta = module.model_dump(mode="json", exclude={"name", "url"})
    href = f"/v2/models/{module.name}/"
    links = [ModelLink(rel="self", href=href), ModelLink(rel="train", href=f"{href}train/")]
    meta["version"] = str(module.promoted) if module.promoted else ""
    return ModelMeta(id=module.name, name=module.name, links=links, url=module.url or "", **meta)


@router.get("/", response_model=ModelList)
@router.get("", include_in_schema=False)
async def list_models(request: Request) -> ModelList:
    """The catalog's modules, as DEEPaaS lists models."""
    return ModelList(models=[describe(m) for m in await catalog_of(request).list_modules()])


@router.get("/{name}/", response_model=ModelMeta)
@router.get("/{name}", include_in_schema=False)
async def get_model(request: Request, name: Name) -> ModelMeta:
    """One model's metadata."""
    return describe(await known_module(request, name))


async def predict(
    request: Request,
    name: Name,
    version: Annotated[int | None, Query(ge=1, description="pin a version")] = None,
) -> Response:
    """Predict synchronously with the promoted (or pinned) version through `inference`.

    Models the operator lists in `DEEPFAAS_ANONYMOUS_PREDICT` take anonymous calls here,
    rate-limited per model; they run in the model owner's namespace.
    """
    state = state_of(request)
    module = await known_module(request, name, mirrored=True)
    principal: Principal | None = getattr(request.state, "principal", None)
    ns = principal.namespace if principal is not None else module.owner
    if principal is None:
        _admit_anonymous(request, name)
    if version is not None:  # 404 naming the versions that exist, before invoking anything
        await catalog_of(request).get_version(name, version)
    given = await read_model_request(request)
    plugin = installed_plugin(module.plugin_name)
    if plugin is not None:
        plugin.validate_predict_args({**given.args, "data": given.data, "filename": given.filename})
    if given.data is None:
        raise ValidationFailedError("no input: send a `data` file or base64 `data`", loc=["data"])
    spec = state.cache.get(qualify(ns, INFERENCE))
    inp: dict[str, Any] = {
        "model": name,
        "version": version,
        "filename": given.filename,
        "args": given.args,
    }
    if inline_or_staged(given.data):
        inp["data"] = given.data
    else:
        inp["object"] = await stage(state.storage, given.data, given.filename, "v2")
    # a form: the file crosses the bus and reaches the model as its own bytes, not base64
    body, content_type = as_form(InferenceInput.model_validate(inp))
    outcome = await state.invoker.invoke_sync(
        spec, body, content_type=content_type, wait=state.settings.sync_wait_s
    )
    if outcome.record is None:
        return Response(
            orjson.dumps({"status": "accepted", "activation_id": outcome.activation_id}),
            status_code=202,
            media_type="application/json",
            headers={"x-activation-id": outcome.activation_id},
        )
    record = outcome.record
    if record.status is not ActivationStatus.SUCCESS or not isinstance(record.result, dict):
        return _failed(record)
    result = record.result
    answer = Prediction(
        status="OK", predictions=result.get("result"), model=name, version=result["version"]
    )
    return Response(
        answer.model_dump_json().encode(),
        media_type="application/json",
        headers={"x-model-version": str(answer.version), "x-activation-id": record.id},
    )


def _failed(record: ActivationRecord) -> Response:
    """A failed prediction as DEEPaaS answers errors."""
    if record.status is ActivationStatus.INVALID:
        listed = record.error_detail if isinstance(record.error_detail, list) else None
        raise ValidationFailedError(record.error or "invalid input", errors=listed or [])
    status = 504 if record.status is ActivationStatus.TIMEOUT else 502
    response = message(status, record.error or "the model failed")
    response.headers["x-activation-id"] = record.id
    return response


def _admit_anonymous(request: Request, name: str) -> None:
    """Let an anonymous prediction through if the model is open to it and under its rate."""
    settings = state_of(request).settings
    if name not in settings.anonymous_predict_models:
        raise HTTPException(401, "this model needs an API key or a bearer token")
    quotas: Quotas | None = getattr(request.app.state, "anonymous_predict", None)
    if quotas is None:
        quotas = Quotas(settings.anonymous_predict_rate_per_s, settings.anonymous_predict_burst, 1)
        request.app.state.anonymous_predict = quotas
    wait = quotas.take(name)
    if wait > 0:
        raise HTTPException(
            429,
            f"anonymous predictions of {name!r} are over their rate limit",
            headers={"retry-after": str(max(1, math.ceil(wait)))},
        )


def _body_docs(schema: dict[str, Any] | None) -> dict[str, Any]:
    """An OpenAPI requestBody: the arguments as JSON (base64 `data`) or a multipart form."""
    json_schema: dict[str, Any] = schema or {"type": "object"}
    form = {**json_schema, "properties": dict(json_schema.get("properties", {}))}
    if "data" in form["properties"]:
        form["properties"]["data"] = {
            **form["properties"]["data"],
            "type": "string",
            "format": "binary",
        }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": json_schema},
                "multipart/form-data": {"schema": form},
                # the file itself as the body; arguments then come from the query string
                "image/*": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }


PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": Prediction, "description": "the predictions and the version that made them"},
    202: {"description": "still running past the wait; poll /v1/activations/{id}"},
    401: {"description": "no credential, and the model is not open to anonymous predictions"},
    404: {"description": "unknown model, or no promoted version"},
    422: {"description": 'invalid arguments or input: `{"field": ["message"]}`'},
    429: {"description": "anonymous predictions of this model are over their rate"},
    502: {"description": "the model failed"},
}


def _predict_for(plugin_name: str) -> Any:
    """A predict endpoint bound to one model (its route documents the model's arguments)."""

    async def fixed(
        request: Request,
        version: Annotated[int | None, Query(ge=1, description="pin a version")] = None,
    ) -> Response:
        return await predict(request, plugin_name, version)

    return fixed


def _documented_routes() -> None:
    """One documented predict route per plug-in installed here, then the generic one."""
    for plugin_name in sorted(discover_models()):
        try:
            plugin = load_model_plugin(plugin_name)
        except Exception:  # a broken plug-in must not stop the gateway; it is logged on use
            continue

        fixed = _predict_for(plugin_name)
        fixed.__doc__ = f"Predict with `{plugin_name}` ({plugin.metadata.description})."
        for path, shown in ((f"/{plugin_name}/predict/", True), (f"/{plugin_name}/predict", False)):
            router.add_api_route(
                path,
                fixed,
                methods=["POST"],
                include_in_schema=shown,
                name=f"predict_{plugin_name}",
                openapi_extra=_body_docs(plugin.predict_schema()),
                responses=PREDICT_RESPONSES,
            )
        models_train.document(plugin_name, plugin.train_schema())
    for path, shown in (("/{name}/predict/", True), ("/{name}/predict", False)):
        router.add_api_route(
            path,
            predict,
            methods=["POST"],
            include_in_schema=shown,
            openapi_extra=_body_docs(None),
            responses=PREDICT_RESPONSES,
        )


_documented_routes()
router.include_router(models_train.router)
