"""/v1/functions: register, read, update and delete functions; list their workers."""

from __future__ import annotations

import nats.errors
import orjson
from fastapi import APIRouter, Path, Request, Response
from pydantic import ValidationError

from eventbus.errors import BusUnavailableError, ValidationFailedError
from eventbus.namespaces import belongs, local_name
from eventbus.subjects import control_subject
from gateway.auth.access import namespace, qualified
from gateway.bodies import FunctionSpecIn, Instance
from gateway.state import state_of
from runtimes.types import FUNCTION_NAME_PATTERN, FunctionSpec
from runtimes.worker.loader import check_syntax

router = APIRouter(prefix="/v1/functions", tags=["functions"])
NamePath = Path(pattern=FUNCTION_NAME_PATTERN, description="function name")


def local(spec: FunctionSpec) -> FunctionSpec:
    """The spec as its namespace sees it (its bare name)."""
    return spec.model_copy(update={"name": local_name(spec.name)})


def _spec_from(body: FunctionSpecIn, name: str | None, request: Request) -> FunctionSpec:
    data = body.model_dump(exclude_unset=True, exclude={"version", "created", "updated"})
    if name is None and data.get("name") is not None:
        data["name"] = qualified(request, data["name"])
    if name is not None:
        if data.get("name") not in (None, name):
            raise ValidationFailedError(
                f"the body names {data['name']!r} but the path names {name!r}", field="name"
            )
        data["name"] = qualified(request, name)
    try:
        spec = FunctionSpec.model_validate(data)
    except ValidationError as exc:
        errors = orjson.loads(exc.json(include_url=False))
        detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in errors)
        raise ValidationFailedError(f"invalid function spec: {detail}", errors=errors) from exc
    syntax = check_syntax(spec)
    if syntax is not None:
        raise ValidationFailedError(
            f"the function's code has a syntax error at {syntax}", field="code"
        )
    return spec


@router.get("", response_model=list[FunctionSpec], response_model_exclude={"__all__": {"code"}})
async def list_functions(request: Request) -> list[FunctionSpec]:
    """Every function (without inline code)."""
    ns = namespace(request)
    return [local(s) for s in await state_of(request).registry.list() if belongs(s.name, ns)]


@router.post("", status_code=201, response_model=FunctionSpec)
async def create_function(
    request: Request, body: FunctionSpecIn, response: Response
) -> FunctionSpec:
    """Register a new function; 409 when the name is taken."""
    state = state_of(request)
    spec = await state.registry.put(_spec_from(body, None, request), create_only=True)
    state.cache.remember(spec)
    response.headers["location"] = f"/v1/functions/{local_name(spec.name)}"
    return local(spec)


@router.put(
    "/{name}",
    response_model=FunctionSpec,
    responses={201: {"model": FunctionSpec, "description": "created (it did not exist)"}},
)
async def put_function(
    request: Request, body: FunctionSpecIn, response: Response, name: str = NamePath
) -> FunctionSpec:
    """Create or replace a function; every update bumps its version (201 when new)."""
    state = state_of(request)
    spec = await state.registry.put(_spec_from(body, name, request))
    state.cache.remember(spec)
    if spec.version == 1:
        response.status_code = 201
    return local(spec)


@router.get("/{name}", response_model=FunctionSpec)
async def get_function(request: Request, name: str = NamePath) -> FunctionSpec:
    """One function's current spec."""
    return local(await state_of(request).registry.get(qualified(request, name)))


@router.delete("/{name}", status_code=204)
async def delete_function(request: Request, name: str = NamePath) -> Response:
    """Delete a function and drop its queued invocations."""
    state = state_of(request)
    name = qualified(request, name)
    await state.registry.delete(name)
    state.cache.forget(name)
    return Response(status_code=204)


@router.get("/{name}/instances", response_model=list[Instance])
async def list_instances(request: Request, name: str = NamePath) -> list[Instance]:
    """The function's worker processes, as the controller reports them."""
    state = state_of(request)
    name = qualified(request, name)
    await state.registry.get(name)
    try:
        reply = await state.bus.nc.request(control_subject("instances", name), b"", timeout=2)
    except (nats.errors.Error, TimeoutError) as exc:  # not "none": nobody could say
        raise BusUnavailableError(
            f"the controller did not answer for {name!r}'s instances: {type(exc).__name__}"
        ) from exc
    return [Instance.model_validate(item) for item in orjson.loads(reply.data)]
