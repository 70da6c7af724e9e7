"""An in-memory view of the function specs, kept current by a KV watch.

A spec this process wrote (or deleted) is taken at once, and the watch's older news of that
name is ignored until the watch brings the write itself: the watch is ordered, so what it says
about the name before that is stale, and what it says after is newer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Final

from eventbus.connection import Bus
from eventbus.errors import NotFoundError
from eventbus.streams import FUNCTIONS_KV
from runtimes.types import FunctionSpec

log = logging.getLogger(__name__)
#: a write the watch has not confirmed in this long no longer holds back its news (a watch
#: that restarted past it, say)
UNCONFIRMED_S: Final = 30.0
EPOCH: Final = datetime.min.replace(tzinfo=UTC)


def _stamp(spec: FunctionSpec) -> datetime:
    return spec.updated or EPOCH


class FunctionCache:
    """Specs by name, so that an invoke does not read KV on the hot path."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.specs: dict[str, FunctionSpec] = {}
        self._task: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()
        #: names written here whose write the watch has not brought yet: the written spec's
        #: `updated` stamp (None for a delete) and when
        self._unconfirmed: dict[str, tuple[datetime | None, float]] = {}

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
        if current is not None and _stamp(current) >= _stamp(spec):
            return  # the watch brought this write (or a later one) already
        self.specs[spec.name] = spec
        self._unconfirmed[spec.name] = (spec.updated, time.monotonic())

    def forget(self, name: str) -> None:
        """Drop a spec deleted by this process."""
        if self.specs.pop(name, None) is not None:  # else the watch brought the delete already
            self._unconfirmed[name] = (None, time.monotonic())

    def _apply(self, name: str, spec: FunctionSpec | None, *, current_state: bool) -> None:
        """One change the watch brings (``current_state``: from its initial replay)."""
        mark = self._unconfirmed.get(name)
        if mark is not None and not current_state:
            written, since = mark
            fresh = time.monotonic() - since < UNCONFIRMED_S
            if fresh and (spec.updated if spec is not None else None) != written:
                return  # older than this process's own write: stale
        self._unconfirmed.pop(name, None)
        if spec is None:
            self.specs.pop(name, None)
        else:
            self.specs[name] = spec

    async def _watch(self) -> None:
        kv = await self.bus.kv(FUNCTIONS_KV)
        while True:
            try:
                watcher = await kv.watchall()
                replaying = True
                async for entry in watcher:
                    if entry is None:
                        replaying = False
                        self._synced.set()
                        continue
                    deleted = entry.operation in ("DEL", "PURGE") or not entry.value
                    spec = None if deleted else FunctionSpec.model_validate_json(entry.value)
                    self._apply(entry.key, spec, current_state=replaying)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("function watch ended (%s); watching again", exc)
                await asyncio.sleep(0.5)
