"""Models: the namespace's catalog modules, their versions' metrics as a chart, promote and
roll back."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from gateway.auth.access import namespace
from gateway.console.render import FragmentRoute, fragment
from gateway.params import MAX_NUMBER
from gateway.routes import catalog as api
from runtimes.catalog.types import ModelVersion
from runtimes.models import MODEL_NAME_PATTERN

router = APIRouter(prefix="/ui/x/models", route_class=FragmentRoute, include_in_schema=False)
Name = Annotated[str, Path(pattern=MODEL_NAME_PATTERN, max_length=63)]
Version = Annotated[int, Path(ge=1, le=MAX_NUMBER)]


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
    module = await api.get_module(request, name)
    if module.owner != namespace(request):
        return fragment(request, "error.html", status_code=404, message=f"no module {name!r}")
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
    return await show_model(request, name, note=f"promoted version {version}")


@router.post("/{name}/rollback")
async def rollback(request: Request, name: Name) -> Response:
    """Promote the version promoted before the current one."""
    back = await api.rollback(request, name, None)
    return await show_model(request, name, note=f"rolled back to version {back.version}")
