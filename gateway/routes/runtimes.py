"""Where functions run: each function's runtime as the controller sees it (read-only).

The gateway asks the controller over the bus (``control.runtimes``), as it asks for instances;
it knows nothing of processes itself.
"""

from __future__ import annotations

from typing import Any

import nats.errors
import orjson
from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field

from eventbus.errors import BusUnavailableError
from eventbus.namespaces import local_name
from eventbus.subjects import CONTROL_RUNTIMES
from gateway.auth.access import qualified
from gateway.state import state_of
from runtimes.types import FUNCTION_NAME_PATTERN

router = APIRouter(tags=["runtimes"])
NamePath = Path(pattern=FUNCTION_NAME_PATTERN, description="function name")


class RuntimeInfo(BaseModel):
    """One function's runtime: its workers and, when it is not ready, why."""

    function: str
    version: int | None = None
    site: str | None = None
    status: str = Field(description="`ready`, `scaling`, `idle` (scaled to zero), `pending`")
    reason: str = Field(default="", description="why not ready, e.g. `no GPU free: ...`")
    desired: int = 0
    workers: int = 0
    ready: int = 0
    min_scale: int = 0
    max_scale: int = 0
    gpus: list[int] = Field(default_factory=list)
    pending_since: float | None = Field(default=None, description="epoch seconds")
    retiring: int = Field(default=0, description="old versions still draining (rolling update)")


class Runtimes(BaseModel):
    """Every function's runtime and the prewarmed pool of the local provider."""

    runtimes: list[RuntimeInfo]
    prewarmed: dict[str, int] | None = None


async def _ask(request: Request, name: str = "") -> dict[str, Any]:
    """The controller's answer; 503 when none comes (not "no runtimes": nobody could say)."""
    state = state_of(request)
    try:
        reply = await state.bus.nc.request(CONTROL_RUNTIMES, name.encode(), timeout=2)
    except (nats.errors.Error, TimeoutError) as exc:
        raise BusUnavailableError(
            f"the controller did not answer for the runtimes: {type(exc).__name__}"
        ) from exc
    try:
        value = orjson.loads(reply.data)
    except orjson.JSONDecodeError as exc:
        raise BusUnavailableError("the controller's answer was not JSON") from exc
    return value if isinstance(value, dict) else {"runtimes": []}


@router.get("/v1/runtimes", response_model=Runtimes)
async def list_runtimes(request: Request) -> Runtimes:
    """Every function's runtime, as the controller reports it."""
    return Runtimes.model_validate(await _ask(request))


@router.get("/v1/functions/{name}/runtime", response_model=RuntimeInfo)
async def get_runtime(request: Request, name: str = NamePath) -> RuntimeInfo:
    """One of the caller's functions' runtime: replicas, status and the reason when pending
    (no GPU free, or its namespace's worker budget spent). Every namespace may read its own
    functions'; the list of all of them (`/v1/runtimes`) is the operator's."""
    internal = qualified(request, name)
    await state_of(request).registry.get(internal)
    found = (await _ask(request, internal)).get("runtimes") or []
    if not found:
        return RuntimeInfo(
            function=name, status="unknown", reason="the controller does not run it (yet)"
        )
    info = RuntimeInfo.model_validate(found[0])
    return info.model_copy(update={"function": local_name(info.function)})
