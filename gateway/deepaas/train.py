"""/v2/models/{name}/train: DEEPaaS-style asynchronous training through the `retrain` function.

A training record has DEEPaaS 2.6's shape: `date` (`%Y-%m-%d %H:%M:%S.%f`, UTC), `args`, `uuid`,
`status` (`running`, `done`, `error`, `cancelled`), `result` once finished (`finish_date`,
`duration` as `H:MM:SS.ffffff`, and `output`: the new version, its state and metrics) and
`message` when it failed or was cancelled.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

import orjson
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel

from eventbus.errors import NotFoundError, ValidationFailedError
from gateway.auth.access import caller, namespace, qualified
from gateway.deepaas.errors import DeepaasRoute
from gateway.deepaas.inputs import (
    ModelRequest,
    inline_or_staged,
    installed_plugin,
    known_module,
    read_model_request,
    stage,
)
from gateway.routes.catalog import catalog_of
from gateway.state import state_of
from runtimes.catalog.plugins import MODEL_NAME_PATTERN
from runtimes.catalog.requests import RetrainInput, as_form
from runtimes.catalog.types import Module
from runtimes.errors import ModelNotFoundError
from runtimes.types import ActivationRecord, ActivationStatus

router = APIRouter(route_class=DeepaasRoute)  # under /v2/models, with its tags
Name = Annotated[str, Path(pattern=MODEL_NAME_PATTERN)]
RETRAIN = "retrain"
RUNNING = (ActivationStatus.RUNNING, ActivationStatus.RETRYING)
TRAINING_ID: Final = re.compile(r"^[0-9a-f]{32}$")
DATE_FORMAT: Final = "%Y-%m-%d %H:%M:%S.%f"
#: what of retrain's result a training's `result.output` shows
OUTPUT_KEYS: Final = ("version", "state", "promoted", "reason", "metrics", "seconds")


class TrainingResult(BaseModel):
    """What DEEPaaS adds to a finished training."""

    output: Any = None
    finish_date: str
    duration: str


class Training(BaseModel):
    """A training run as DEEPaaS reports it (`result` and `message` only when they apply)."""

    date: str
    args: dict[str, Any] = {}
    uuid: str
    status: str
    result: TrainingResult | None = None
    message: str | None = None

    def response(self) -> Response:
        """The JSON answer, without the keys that do not apply (as DEEPaaS leaves them out)."""
        return Response(orjson.dumps(self.body()), media_type="application/json")

    def body(self) -> dict[str, Any]:
        """The record as a dict, without `result`/`message` when unset."""
        out = self.model_dump(mode="json")
        for key in ("result", "message"):
            if out[key] is None:
                del out[key]
        return out


def started_at(uuid: str, record: ActivationRecord | None = None) -> datetime:
    """When a training was accepted: the millisecond time in its (time-ordered) id.

    POST and GET derive the date from the id alike, so both say the same date.
    """
    try:
        return datetime.fromtimestamp(int(uuid[:12], 16) / 1000, UTC)
    except ValueError:
        if record is None:
            raise
        return record.accepted or record.start


def _date(at: datetime) -> str:
    return at.astimezone(UTC).strftime(DATE_FORMAT)


def _duration(delta: timedelta) -> str:
    return str(max(delta, timedelta(0)))


def is_cancelled(record: ActivationRecord) -> bool:
    """Whether a retrain activation ended because a client cancelled it."""
    detail = record.error_detail
    return isinstance(detail, dict) and detail.get("cancelled") is True


def training_of(record: ActivationRecord) -> Training:
    """The DEEPaaS view of a retrain activation record."""
    if record.status in RUNNING:
        status = "running"
    elif record.status is ActivationStatus.SUCCESS:
        status = "done"
    elif is_cancelled(record):
        status = "cancelled"
    else:
        status = "error"
    begun = started_at(record.id, record)
    result: TrainingResult | None = None
    if status != "running":
        end = record.end or record.start
        output = record.result if isinstance(record.result, dict) else None
        if output is not None:
            output = {k: output[k] for k in OUTPUT_KEYS if k in output}
        result = TrainingResult(
            output=output, finish_date=_date(end), duration=_duration(end - begun)
        )
    return Training(
        date=_date(begun),
        args=dict(record.annotations.get("train_args", {})),
        uuid=record.id,
        status=status,
        result=result,
        message=record.error if status in ("error", "cancelled") else None,
    )


def known_arguments(module: Module) -> frozenset[str] | None:
    """The train arguments the model declares (None: it declares none we can check)."""
    plugin = installed_plugin(module.plugin_name)
    if plugin is not None:
        return frozenset(plugin.train_args.model_fields)
    schema = module.train_schema
    if schema and isinstance(schema.get("properties"), dict):
        return frozenset(schema["properties"])
    return None


def check_arguments(module: Module, given: ModelRequest) -> None:
    """422 (`{"arg": ["Unknown field."]}`) for arguments the model does not take."""
    known = known_arguments(module)
    if known is None:
        return
    unknown = sorted(set(given.args) - known)
    if unknown:
        raise ValidationFailedError(
            f"unknown train arguments for {module.name!r}: {', '.join(unknown)}",
            errors=[{"loc": [k], "msg": "Unknown field."} for k in unknown],
        )


async def train(request: Request, name: Name) -> Response:
    """Start training a new version; poll `/v2/models/{name}/train/{uuid}` for its state.

    Only the namespace that owns the module may train it (403 for any other). Arguments come
    from the query string (as DEEPaaS clients send them), a form or a JSON body; unknown ones
    are refused with 422.
    """
    state = state_of(request)
    module = await known_module(request, name)
    catalog_of(request).authorize(module)
    given = await read_model_request(request)
    check_arguments(module, given)
    inp: dict[str, Any] = {"model": name, "args": given.args}
    plugin = installed_plugin(module.plugin_name)
    if given.data is None:
        inp["default"] = True  # the plug-in's own data set; `retrain` checks the arguments
    else:
        if plugin is not None:
            plugin.validate_train_args({**given.args, "data": given.data})
        if inline_or_staged(given.data):
            inp["data"] = given.data
        else:
            inp["object"] = await stage(state.storage, given.data, given.filename, "train")
    spec = state.cache.get(qualified(request, RETRAIN))
    body, content_type = as_form(RetrainInput.model_validate(inp))  # the data as bytes
    activation_id = await state.invoker.invoke_async(spec, body, content_type=content_type)
    return Training(
        date=_date(started_at(activation_id)),
        args={k: v for k, v in given.args.items() if isinstance(v, str | int | float | bool)},
        uuid=activation_id,
        status="running",
    ).response()


async def _training_record(request: Request, name: str, uuid: str) -> ActivationRecord:
    if not TRAINING_ID.fullmatch(uuid):
        raise NotFoundError(f"no training {uuid!r} of {name!r}", model=name, uuid=uuid)
    try:
        record = await state_of(request).activations.get(uuid)
    except NotFoundError as exc:
        raise NotFoundError(
            f"no training {uuid!r} of {name!r} has started (yet)", model=name, uuid=uuid
        ) from exc
    model = record.annotations.get("model", name)
    if record.function != qualified(request, RETRAIN) or model != name:
        raise ModelNotFoundError(f"no training {uuid!r} of {name!r}", model=name, uuid=uuid)
    return record


async def get_training(request: Request, name: Name, uuid: str) -> Response:
    """A training run's status; with its new version, state and metrics once done."""
    return training_of(await _training_record(request, name, uuid)).response()


async def cancel_training(request: Request, name: Name, uuid: str) -> Response:
    """Cancel a running training: it ends `cancelled` with the reason in `message`.

    The worker running it loses its claim at its next lease renewal and stops the run; one that
    has not started it finds it ended. A training that had already finished is answered as it
    is (200, its status unchanged), as DEEPaaS does; an unknown one is 404.
    """
    await known_module(request, name)
    record = await _training_record(request, name, uuid)
    who = caller(request)
    reason = f"cancelled by {who.subject or who.namespace} over DELETE /v2/models/{name}/train"
    ended = await state_of(request).activations.cancel(
        record.id, reason=reason, detail={"cancelled": True, "by": who.namespace}
    )
    return training_of(ended).response()


async def list_trainings(
    request: Request, name: Name, limit: Annotated[int, Query(ge=1, le=200)] = 30
) -> Response:
    """The model's training runs, newest first."""
    ns = namespace(request)
    found = await state_of(request).activations.recent(
        limit=limit,
        function=qualified(request, RETRAIN),
        where=lambda r: r.namespace == ns and r.annotations.get("model") == name,
    )
    return Response(
        orjson.dumps([training_of(r).body() for r in found]), media_type="application/json"
    )


TRAIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "unknown model"},
    422: {"description": 'invalid or unknown arguments: `{"field": ["message"]}`'},
}
for _path, _shown in (("/{name}/train/", True), ("/{name}/train", False)):
    router.add_api_route(
        _path,
        train,
        methods=["POST"],
        include_in_schema=_shown,
        response_model=Training,
        responses=TRAIN_RESPONSES,
        openapi_extra={"requestBody": {"required": False, "content": {"multipart/form-data": {}}}},
    )
    router.add_api_route(
        _path,
        list_trainings,
        methods=["GET"],
        include_in_schema=_shown,
        response_model=list[Training],
    )
for _path, _shown in (("/{name}/train/{uuid}", True), ("/{name}/train/{uuid}/", False)):
    router.add_api_route(
        _path,
        get_training,
        methods=["GET"],
        include_in_schema=_shown,
        response_model=Training,
        responses={404: {"description": "no such training"}},
    )
    router.add_api_route(
        _path,
        cancel_training,
        methods=["DELETE"],
        include_in_schema=_shown,
        response_model=Training,
        responses={404: {"description": "no such training"}},
    )


def document(plugin_name: str, schema: dict[str, Any]) -> None:
    """A documented train route for one installed plug-in (its arguments in the docs)."""

    async def fixed(request: Request) -> Response:
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
        responses=TRAIN_RESPONSES,
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
