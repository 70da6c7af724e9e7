"""Models: the namespace's catalog modules, their versions' metrics as a chart, promote and
roll back, predict from a file, start a training and watch it (through the `/v2` routes)."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Request, Response

from eventbus.errors import NotFoundError
from gateway.auth.access import namespace
from gateway.console.render import FRAGMENTS, FragmentRoute, fragment
from gateway.deepaas import models as models_api
from gateway.deepaas import train as train_api
from gateway.params import MAX_NUMBER, ActivationId
from gateway.routes import catalog as api
from runtimes.catalog.plugins import MODEL_NAME_PATTERN
from runtimes.catalog.types import ModelVersion

router = APIRouter(prefix=f"{FRAGMENTS}/models", route_class=FragmentRoute, include_in_schema=False)
Name = Annotated[str, Path(pattern=MODEL_NAME_PATTERN, max_length=63)]
Version = Annotated[int, Path(ge=1, le=MAX_NUMBER)]


async def _own(request: Request, name: str) -> None:
    """404 unless the caller's namespace published ``name`` (others' are not shown here)."""
    module = await api.get_module(request, name)
    if module.owner != namespace(request):
        raise NotFoundError(f"no module {name!r} of yours", model=name)


@router.get("")
async def list_models(request: Request) -> Response:
    """The modules the namespace published (the catalog's others are browsable at `/v2`)."""
    ns = namespace(request)
    modules = [m for m in await api.list_modules(request, None, None, None) if m.owner == ns]
    return fragment(request, "models_list.html", modules=modules)


def _chart(versions: list[ModelVersion], metric: str) -> dict[str, object]:
    """The gating metric and every other score in [0, 1] (counts and timings would flatten
    them), one series each, over the version numbers."""
    names = sorted(
        name
        for name in {name for v in versions for name in v.metrics}
        if name == metric or all(0 <= v.metrics.get(name, 0) <= 1 for v in versions)
    )
    return {
        "x": [v.version for v in versions],
        "xlabel": "version",
        "ylabel": "metric",
        "series": [{"label": n, "values": [v.metrics.get(n) for v in versions]} for n in names],
    }


@router.get("/{name}")
async def show_model(request: Request, name: Name, note: str = "") -> Response:
    """A module: its versions (state, metrics) with promote and roll back, and their chart."""
    await _own(request, name)
    module = await api.get_module(request, name)
    versions = await api.list_versions(request, name)
    return fragment(
        request,
        "model_detail.html",
        module=module,
        versions=versions,
        chart=_chart(versions, module.metric),
        note=note,
    )


@router.post("/{name}/versions/{version}/promote")
async def promote(request: Request, name: Name, version: Version) -> Response:
    """Serve this version from now on (only the owner may)."""
    await api.promote(request, name, version)
    response = await show_model(request, name, note=f"promoted version {version}")
    response.headers["hx-trigger"] = "df-models"
    return response


@router.post("/{name}/rollback")
async def rollback(request: Request, name: Name) -> Response:
    """Promote the version promoted before the current one."""
    back = await api.rollback(request, name, None)
    response = await show_model(request, name, note=f"rolled back to version {back.version}")
    response.headers["hx-trigger"] = "df-models"
    return response


@router.post("/{name}/predict")
async def predict(request: Request, name: Name) -> Response:
    """Predict with the promoted version from the form's `data` file (as `/v2` predict)."""
    await _own(request, name)
    answer = await models_api.predict(request, name, None)
    return fragment(
        request,
        "model_answer.html",
        status=answer.status_code,
        answer=orjson.loads(bytes(answer.body)),
    )


@router.post("/{name}/train")
async def train(request: Request, name: Name) -> Response:
    """Start a training on the plug-in's own data (as `/v2` train); its state follows."""
    await _own(request, name)
    answer = await train_api.train(request, name)
    return fragment(request, "training.html", name=name, training=orjson.loads(bytes(answer.body)))


@router.get("/{name}/trainings/{uuid}")
async def training(request: Request, name: Name, uuid: ActivationId) -> Response:
    """A training's state; it polls itself while the training is queued or running."""
    await _own(request, name)
    try:
        answer = await train_api.get_training(request, name, uuid)
    except NotFoundError:
        queued = {"uuid": uuid, "status": "queued"}
        return fragment(request, "training.html", name=name, training=queued)
    state = orjson.loads(bytes(answer.body))
    ended = state.get("status") not in ("running", "queued")
    trigger = "df-models" if ended else None  # the list shows the new version
    return fragment(request, "training.html", trigger=trigger, name=name, training=state)
