"""/v1/catalog: browse, search, publish, version, promote, retire and roll back model modules.

Anyone may read. A module belongs to the namespace that published it: only that namespace may
change it (403 for any other, including for publishing a name another namespace owns).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from eventbus.errors import ValidationFailedError
from gateway.auth.errors import ForbiddenError
from gateway.auth.types import Principal
from gateway.catalog_specs import spec_from_plugin
from gateway.params import MAX_NUMBER
from gateway.state import state_of
from runtimes.catalog.plugins import (
    MODEL_NAME_PATTERN,
    LoadedModelPlugin,
    discover_models,
    load_model_plugin,
)
from runtimes.catalog.store import CatalogStore
from runtimes.catalog.types import GateDecision, Lineage, ModelVersion, Module, ModuleSpec
from runtimes.errors import ModelInputError

router = APIRouter(prefix="/v1/catalog", tags=["catalog"])
Name = Annotated[str, Path(pattern=MODEL_NAME_PATTERN)]
Version = Annotated[int, Path(ge=1, le=MAX_NUMBER)]
MAX_ARTIFACT = 512 * 1024 * 1024


class ObjectRef(BaseModel):
    """An object already in the platform's store."""

    model_config = ConfigDict(extra="forbid")

    bucket: str = Field(min_length=1)
    key: str = Field(min_length=1)


class NewVersion(BaseModel):
    """A version made from an artifact already in storage."""

    model_config = ConfigDict(extra="forbid")

    artifact: ObjectRef
    metrics: dict[str, float] = Field(default_factory=dict)
    lineage: Lineage = Field(default_factory=Lineage)
    metric: str | None = None
    gate: bool = Field(default=False, description="run the promotion gate on it")


class AddedVersion(BaseModel):
    """The new version and, when asked for, the gate's verdict."""

    version: ModelVersion
    gate: GateDecision | None = None


class Retire(BaseModel):
    """Why a version is withdrawn."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="retired", max_length=1000)


class Rollback(BaseModel):
    """Which version to go back to (default: the one promoted before)."""

    model_config = ConfigDict(extra="forbid")

    to: int | None = Field(default=None, ge=1, le=MAX_NUMBER)


def catalog_of(request: Request) -> CatalogStore:
    """A catalog over the gateway's bus and object store, acting for the caller's namespace."""
    state = state_of(request)
    principal: Principal | None = getattr(request.state, "principal", None)
    actor = principal.namespace if principal is not None else None
    return CatalogStore(state.bus, state.storage, actor=actor)


@router.get("/modules", response_model=list[Module])
async def list_modules(
    request: Request,
    q: Annotated[str | None, Query(description="search name, title, description")] = None,
    keyword: Annotated[str | None, Query()] = None,
    framework: Annotated[str | None, Query()] = None,
) -> list[Module]:
    """Modules by name, optionally searched."""
    return await catalog_of(request).list_modules(q, keyword, framework)


@router.post("/modules", status_code=201, response_model=Module)
async def publish(request: Request, spec: ModuleSpec, response: Response) -> Module:
    """Publish a new module (409 if the name is taken)."""
    response.headers["location"] = f"/v1/catalog/modules/{spec.name}"
    return await catalog_of(request).publish(spec)


@router.post("/publish/{plugin}", status_code=201, response_model=Module)
async def publish_plugin(
    request: Request, plugin: Name, replace: Annotated[bool, Query()] = False
) -> Module:
    """Publish a module from a plug-in installed in the gateway (its metadata and schemas)."""
    return await catalog_of(request).publish(spec_from_plugin(plugin), replace=replace)


@router.put("/modules/{name}", response_model=Module)
async def replace(request: Request, name: Name, spec: ModuleSpec) -> Module:
    """Create or replace a module's description (its versions stay)."""
    if spec.name != name:
        raise ValidationFailedError(f"the body names {spec.name!r}, the path {name!r}")
    return await catalog_of(request).publish(spec, replace=True)


@router.get("/modules/{name}", response_model=Module)
async def get_module(request: Request, name: Name) -> Module:
    """One module."""
    return await catalog_of(request).get_module(name)


@router.delete("/modules/{name}", status_code=204)
async def delete_module(request: Request, name: Name) -> Response:
    """Remove a module and its version records (artifacts stay)."""
    await catalog_of(request).delete_module(name)
    return Response(status_code=204)


@router.get("/modules/{name}/versions", response_model=list[ModelVersion])
async def list_versions(request: Request, name: Name) -> list[ModelVersion]:
    """A module's versions, oldest first."""
    return await catalog_of(request).list_versions(name)


@router.post("/modules/{name}/versions", status_code=201, response_model=AddedVersion)
async def add_version(request: Request, name: Name, body: NewVersion) -> AddedVersion:
    """Add a `candidate` version from an artifact in storage; ``gate`` may promote it.

    The artifact must be in an object the caller may read (a bucket of its namespace) and in
    the plug-in's safe format (checked here, before anything is stored; never unpickled).
    """
    state = state_of(request)
    catalog = catalog_of(request)
    module = await catalog.check_owner(name)
    bucket = body.artifact.bucket
    if catalog.actor is None or not await state.buckets.owns(bucket, catalog.actor):
        raise ForbiddenError(
            f"bucket {bucket!r} is not one of your namespace's: an artifact can be registered "
            "only from an object you may read",
            bucket=bucket,
        )
    info, stream = await state.storage.get(body.artifact.bucket, body.artifact.key)
    if info.size > MAX_ARTIFACT:
        await stream.aclose()
        raise ValidationFailedError(f"the artifact is over {MAX_ARTIFACT} bytes", size=info.size)
    chunks: list[bytes] = []
    try:
        async for chunk in stream:
            chunks.append(chunk)
    finally:
        await stream.aclose()
    artifact = b"".join(chunks)
    plugin = _checking_plugin(module.plugin_name, name)
    plugin.check_artifact(artifact)
    lineage = body.lineage
    if not lineage.data:
        lineage = lineage.model_copy(
            update={"data": {"artifact": f"{body.artifact.bucket}/{body.artifact.key}"}}
        )
    version = await catalog.add_version(
        name, artifact, metrics=body.metrics, lineage=lineage, metric=body.metric
    )
    if not body.gate:
        return AddedVersion(version=version)
    decision, gated = await catalog.gate(name, version.version)
    return AddedVersion(version=gated, gate=decision)


@router.get("/modules/{name}/versions/{version}", response_model=ModelVersion)
async def get_version(request: Request, name: Name, version: Version) -> ModelVersion:
    """One version (404 naming the versions that exist)."""
    return await catalog_of(request).get_version(name, version)


@router.post("/modules/{name}/versions/{version}/promote", response_model=ModelVersion)
async def promote(request: Request, name: Name, version: Version) -> ModelVersion:
    """Serve this version from now on."""
    return await catalog_of(request).promote(name, version)


@router.post("/modules/{name}/versions/{version}/retire", response_model=ModelVersion)
async def retire(
    request: Request, name: Name, version: Version, body: Retire | None = None
) -> ModelVersion:
    """Withdraw a version (409 for the promoted one)."""
    return await catalog_of(request).retire(name, version, reason=(body or Retire()).reason)


@router.post("/modules/{name}/rollback", response_model=ModelVersion)
async def rollback(request: Request, name: Name, body: Rollback | None = None) -> ModelVersion:
    """Promote the version promoted before the current one, or ``to``."""
    return await catalog_of(request).rollback(name, (body or Rollback()).to)


def _checking_plugin(plugin: str, module: str) -> LoadedModelPlugin:
    """The installed plug-in that checks a registered artifact's format (422 if none is)."""
    if plugin not in discover_models():
        raise ModelInputError(
            f"the plug-in {plugin!r} of module {module!r} is not installed in the gateway, so "
            "no artifact for it can be checked: train versions through the platform instead",
            model=module,
        )
    return load_model_plugin(plugin)
