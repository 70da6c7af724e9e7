"""Function specs in the `functions` KV bucket; every update bumps the version.

The platform's own functions (`inference`, `retrain`, `rank`, `deploy` of namespace `default`)
are what `/v2`, `/v1/deployments` and the catalog run on: their settings (scale, limits, env)
may change through any door (`/v1`, OpenWhisk, OSCAR), their code may not, and they cannot be
deleted, so that no caller, however privileged, breaks those routes by reusing the name.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from eventbus.connection import Bus
from eventbus.errors import ConflictError, NotFoundError
from eventbus.kv import keys as kv_keys
from eventbus.kv import read, write
from eventbus.namespaces import DEFAULT_NAMESPACE, split
from eventbus.streams import FUNCTIONS_KV, remove_function_queue
from runtimes.sandbox.policy import TRUSTED_FUNCTIONS, TRUSTED_PACKAGE
from runtimes.types import FunctionSpec

log = logging.getLogger(__name__)


class FunctionRegistry:
    """Create, read, update and delete function specs."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def get(self, name: str) -> FunctionSpec:
        """The current spec, or `NotFoundError`."""
        found = await read(await self.bus.kv(FUNCTIONS_KV), name, FunctionSpec)
        if found is None:
            raise NotFoundError(f"function {name!r} does not exist", function=name)
        return found[0]

    async def list(self) -> list[FunctionSpec]:
        """Every function, sorted by name."""
        kv = await self.bus.kv(FUNCTIONS_KV)
        keys = await kv_keys(kv)
        specs = []
        for key in sorted(keys):
            try:
                specs.append(await self.get(key))
            except NotFoundError:
                continue
            except ValueError as exc:  # a stored spec that no longer validates: skip it
                log.error("function %s: stored spec is invalid: %s", key, exc)
        return specs

    async def put(self, spec: FunctionSpec, *, create_only: bool = False) -> FunctionSpec:
        """Create, or update with the version bumped; `ConflictError` on a concurrent change
        or on other code for a platform function."""
        if not keeps_platform_code(spec):
            raise ConflictError(
                f"function {spec.name!r} is the platform's own: its settings may change, but "
                f"its handler stays in {platform_module(spec.name)} (no code or script); "
                "name yours otherwise",
                function=spec.name,
            )
        kv = await self.bus.kv(FUNCTIONS_KV)
        now = datetime.now(UTC)
        found = await read(kv, spec.name, FunctionSpec)
        current, revision = found if found else (None, None)
        if current is not None and create_only:
            raise ConflictError(f"function {spec.name!r} exists already", function=spec.name)
        stored = spec.model_copy(
            update={
                "version": current.version + 1 if current else 1,
                "created": current.created if current else now,
                "updated": now,
            }
        )
        if await write(kv, spec.name, stored.model_dump_json().encode(), last=revision) is None:
            raise ConflictError(
                f"function {spec.name!r} changed concurrently; retry", function=spec.name
            )
        return stored

    async def delete(self, name: str) -> None:
        """Delete the spec and its queued invocations; `NotFoundError` when absent,
        `ConflictError` for a platform function."""
        await self.get(name)
        if platform_module(name) is not None:
            raise ConflictError(
                f"function {name!r} is the platform's own and cannot be deleted "
                "(scale it to zero with min_scale 0 instead)",
                function=name,
            )
        kv = await self.bus.kv(FUNCTIONS_KV)
        await kv.delete(name)
        await remove_function_queue(self.bus.js, name)


def platform_module(name: str) -> str | None:
    """The module that must hold the handler of ``name`` when it is one of the platform's own
    functions (`functions.<name>.handler`), else None."""
    namespace, local = split(name)
    if namespace != DEFAULT_NAMESPACE or local not in TRUSTED_FUNCTIONS:
        return None
    return f"{TRUSTED_PACKAGE}{local}.handler"


def keeps_platform_code(spec: FunctionSpec) -> bool:
    """Whether ``spec`` may be stored under its name: any spec of a name that is not one of the
    platform's functions, else only the platform's code (settings may differ)."""
    module = platform_module(spec.name)
    return module is None or (
        spec.code is None and spec.script is None and spec.handler.startswith(module + ":")
    )
