"""Function specs in the `functions` KV bucket; every update bumps the version."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from eventbus.connection import Bus
from eventbus.errors import ConflictError, NotFoundError
from eventbus.kv import keys as kv_keys
from eventbus.streams import FUNCTIONS_KV, remove_function_queue
from runtimes.types import FunctionSpec

log = logging.getLogger(__name__)


class FunctionRegistry:
    """Create, read, update and delete function specs."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def get(self, name: str) -> FunctionSpec:
        """The current spec, or `NotFoundError`."""
        kv = await self.bus.kv(FUNCTIONS_KV)
        try:
            entry = await kv.get(name)
        except KeyNotFoundError as exc:
            raise NotFoundError(f"function {name!r} does not exist", function=name) from exc
        if not entry.value:
            raise NotFoundError(f"function {name!r} does not exist", function=name)
        return FunctionSpec.model_validate_json(entry.value)

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
        try:
            entry = await kv.get(spec.name)
            current = FunctionSpec.model_validate_json(entry.value) if entry.value else None
            revision = entry.revision
        except KeyNotFoundError:
            current, revision = None, None
        if current is not None and create_only:
            raise ConflictError(f"function {spec.name!r} exists already", function=spec.name)
        stored = spec.model_copy(
            update={
                "version": current.version + 1 if current else 1,
                "created": current.created if current else now,
                "updated": now,
            }
        )
        value = stored.model_dump_json().encode()
        try:
            if revision is None:
                await kv.create(spec.name, value)
            else:
                await kv.update(spec.name, value, last=revision)
        except KeyWrongLastSequenceError as exc:
            raise ConflictError(
                f"function {spec.name!r} changed concurrently; retry", function=spec.name
            ) from exc
        return stored

    async def delete(self, name: str) -> None:
        """Delete the spec and its queued invocations; `NotFoundError` when absent."""
        await self.get(name)
        kv = await self.bus.kv(FUNCTIONS_KV)
        await kv.delete(name)
        await remove_function_queue(self.bus.js, name)
