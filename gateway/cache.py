"""An in-memory view of the function specs, kept current by a KV watch."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from eventbus.connection import Bus
from eventbus.errors import NotFoundError
from eventbus.streams import FUNCTIONS_KV
from runtimes.types import FunctionSpec

log = logging.getLogger(__name__)


class FunctionCache:
    """Specs by name, so that an invoke does not read KV on the hot path."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.specs: dict[str, FunctionSpec] = {}
        self._task: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()

    async def start(self) -> None:
        """Load every spec, then follow changes."""
        self._task = asyncio.create_task(self._watch(), name="function-cache")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._synced.wait(), 10)

    async def stop(self) -> None:
        """Stop following changes."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def get(self, name: str) -> FunctionSpec:
        """The spec, or `NotFoundError`."""
        spec = self.specs.get(name)
        if spec is None:
            raise NotFoundError(f"function {name!r} does not exist", function=name)
        return spec

    def remember(self, spec: FunctionSpec) -> None:
        """Take a spec written by this process at once (the watch confirms it later)."""
        current = self.specs.get(spec.name)
        if current is None or current.version <= spec.version:
            self.specs[spec.name] = spec

    def forget(self, name: str) -> None:
        """Drop a spec deleted by this process."""
        self.specs.pop(name, None)

    async def _watch(self) -> None:
        kv = await self.bus.kv(FUNCTIONS_KV)
        while True:
            try:
                watcher = await kv.watchall()
                async for entry in watcher:
                    if entry is None:
                        self._synced.set()
                        continue
                    if entry.operation in ("DEL", "PURGE") or not entry.value:
                        self.specs.pop(entry.key, None)
                    else:
                        spec = FunctionSpec.model_validate_json(entry.value)
                        self.specs[spec.name] = spec
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("function watch ended (%s); watching again", exc)
                await asyncio.sleep(0.5)
