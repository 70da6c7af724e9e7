"""Function specs in the `functions` KV bucket; every update bumps the version."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from eventbus.connection import Bus
from eventbus.errors import ConflictError, NotFoundError
from eventbus.kv import keys as kv_keys
from eventbus.kv import read, write
from eventbus.streams import FUNCTIONS_KV, remove_function_queue
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
        """Create, or update with the version bumped; `ConflictError` on a concurrent change."""
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
        """Delete the spec and its queued invocations; `NotFoundError` when absent."""
        await self.get(name)
        kv = await self.bus.kv(FUNCTIONS_KV)
        await kv.delete(name)
        await remove_function_queue(self.bus.js, name)
