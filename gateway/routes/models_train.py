"""/v2/models/{name}/train: DEEPaaS-style asynchronous training through the `retrain` function."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel

from eventbus.errors import NotFoundError
from functions.retrain.models import RetrainInput
from gateway.auth.access import namespace, qualified
from gateway.routes.catalog import catalog_of
from gateway.routes.model_input import (
    inline_or_staged,
    installed_plugin,
    known_module,
    read_model_request,
    stage,
)
from gateway.state import state_of
from runtimes.errors import ModelNotFoundError
from runtimes.models import MODEL_NAME_PATTERN
from runtimes.types import ActivationRecord, ActivationStatus

router = APIRouter(tags=["models"])  # included by `gateway.routes.models` under /v2/models
Name = Annotated[str, Path(pattern=MODEL_NAME_PATTERN)]
RETRAIN = "retrain"
RUNNING = (ActivationStatus.RUNNING, ActivationStatus.RETRYING)


class Training(BaseModel):
    """A training run as DEEPaaS reports it."""

    uuid: str
    date: str
    status: str
    args: dict[str, Any] = {}
    href: str
    result: dict[str, Any] | None = None
    message: str | None = None


def _href(name: str, uuid: str) -> str:
    return f"/v2/models/{name}/train/{uuid}"


def training_of(name: str, record: ActivationRecord) -> Training:
    """The DEEPaaS view of a retrain activation record."""
    if record.status in RUNNING:
        status = "running"
    elif record.status is ActivationStatus.SUCCESS:
        status = "done"
    else:
        status = "error"
    result = record.result if isinstance(record.result, dict) else None
    if result is not None:
        keep = ("version", "state", "promoted", "reason", "metrics", "seconds")
        result = {k: result[k] for k in keep if k in result}
    return Training(
        uuid=record.id,
        date=(record.accepted or record.start).isoformat(),
        status=status,
        args=dict(record.annotations.get("train_args", {})),
        href=_href(name, record.id),
        result=result,
        message=record.error if status == "error" else None,
    )


async def train(request: Request, name: Name) -> Training:
    """Start training a new version; poll the returned `href` for its status and metrics.

    Only the namespace that owns the module may train it (403 for any other).
    """
    state = state_of(request)
    module = await known_module(request, name)
    catalog_of(request).authorize(module)
    given = await read_model_request(request)
    inp: dict[str, Any] = {"model": name, "args": given.args}
    if given.data is None:
        inp["default"] = True
    else:
        plugin = installed_plugin(module.plugin_name)
        if plugin is not None:
            plugin.validate_train_args({**given.args, "data": given.data})
        if inline_or_staged(given.data):
            inp["data"] = given.data
        else:
            inp["object"] = await stage(state.storage, given.data, given.filename, "train")
    spec = state.cache.get(qualified(request, RETRAIN))
    body = RetrainInput.model_validate(inp).model_dump_json(exclude_none=True).encode()
    activation_id = await state.invoker.invoke_async(spec, body, content_type="application/json")
    return Training(
        uuid=activation_id,
        date=datetime.now(UTC).isoformat(),
        status="running",
        args={k: v for k, v in given.args.items() if isinstance(v, str | int | float | bool)},
        href=_href(name, activation_id),
    )


async def get_training(request: Request, name: Name, uuid: str) -> Training:
    """A training run's status; with its new version, state and metrics once done."""
    try:
        record = await state_of(request).activations.get(uuid)
    except NotFoundError as exc:
        raise NotFoundError(
            f"no training {uuid!r} of {name!r} has started (yet)", model=name, uuid=uuid
        ) from exc
    model = record.annotations.get("model", name)
    if record.function != qualified(request, RETRAIN) or model != name:
        raise ModelNotFoundError(f"no training {uuid!r} of {name!r}", model=name, uuid=uuid)
    return training_of(name, record)


async def list_trainings(
    request: Request, name: Name, limit: Annotated[int, Query(ge=1, le=200)] = 30
) -> list[Training]:
    """The model's training runs, newest first."""
    ns = namespace(request)
    found = await state_of(request).activations.recent(
        limit=limit,
        function=qualified(request, RETRAIN),
        where=lambda r: r.namespace == ns and r.annotations.get("model") == name,
    )
    return [training_of(name, r) for r in found]


for _path, _shown in (("/{name}/train/", True), ("/{name}/train", False)):
    router.add_api_route(
        _path,
        train,
        methods=["POST"],
        include_in_schema=_shown,
        response_model=Training,
        openapi_extra={"requestBody": {"required": False, "content": {"multipart/form-data": {}}}},
    )
    router.add_api_route(
        _path,
        list_trainings,
        methods=["GET"],
        include_in_schema=_shown,
        response_model=list[Training],
    )
router.add_api_route("/{name}/train/{uuid}", get_training, methods=["GET"], response_model=Training)
router.add_api_route(
    "/{name}/train/{uuid}/", get_training, methods=["GET"], include_in_schema=False
)


def document(plugin_name: str, schema: dict[str, Any]) -> None:
    """A documented train route for one installed plug-in (its arguments in the docs)."""

    async def fixed(request: Request) -> Training:
        return await train(request, plugin_name)

    fixed.__doc__ = f"Train a new version of `{plugin_name}` (no data: its own data set)."
    form = {**schema, "properties": dict(schema.get("properties", {}))}
    form.pop("required", None)
    if "data" in form["properties"]:
        form["properties"]["data"] = {"type": "string", "format": "binary"}
    router.add_api_route(
        f"/{plugin_name}/train/",
        fixed,
        methods=["POST"],
        response_model=Training,
        name=f"train_{plugin_name}",
        openapi_extra={
            "requestBody": {
                "required": False,
                "content": {
                    "multipart/form-data": {"schema": form},
                    "application/json": {"schema": {**schema, "required": []}},
                },
            }
        },
    )
