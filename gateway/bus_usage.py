"""The bus's disk against its budget: a gauge per stream and KV bucket, a warning near the limit."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import CollectorRegistry, Gauge

from eventbus.connection import Bus
from eventbus.stream_sync import Usage
from eventbus.streams import usage

log = logging.getLogger(__name__)
#: a stream this full (of its budget) is logged as a warning, once per crossing
WARN_AT = 0.8
#: seconds between two looks at the streams
CHECK_S = 10.0


class BusUsage:
    """Bytes, messages and budget of every stream, as gauges; warns above `WARN_AT`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["stream"]
        self.used = Gauge(
            "deepfaas_bus_stream_bytes",
            "Bytes a stream or KV bucket keeps on the bus",
            labels,
            registry=registry,
        )
        self.budget = Gauge(
            "deepfaas_bus_stream_budget_bytes",
            "A stream's byte budget (max_bytes), -1 for none",
            labels,
            registry=registry,
        )
        self.messages = Gauge(
            "deepfaas_bus_stream_messages", "Messages a stream keeps", labels, registry=registry
        )
        self._warned: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def refresh(self, bus: Bus) -> list[Usage]:
        """Read every stream now; set the gauges and warn about the ones near their budget."""
        found = await usage(bus.js)
        for item in found:
            self.used.labels(item.name).set(item.bytes)
            self.budget.labels(item.name).set(item.budget if item.budget is not None else -1)
            self.messages.labels(item.name).set(item.messages)
            self._warn(item)
        return found

    def _warn(self, item: Usage) -> None:
        fraction = item.fraction
        if fraction is None or fraction < WARN_AT:
            self._warned.discard(item.name)
            return
        if item.name in self._warned:
            return
        self._warned.add(item.name)
        effect = (
            "new writes are refused (503)" if item.discard == "new" else "the oldest entries go"
        )
        log.warning(
            "bus stream %s holds %d of its %d bytes (%.0f%%): at the limit %s; raise "
            "DEEPFAAS_NATS_BUDGET(S) or free disk",
            item.name,
            item.bytes,
            item.budget,
            fraction * 100,
            effect,
        )

    def start(self, bus: Bus) -> None:
        """Look at the streams every `CHECK_S` seconds in the background."""
        self._task = asyncio.create_task(self._watch(bus), name="bus-usage")

    async def _watch(self, bus: Bus) -> None:
        while True:
            try:
                await self.refresh(bus)
            except Exception as exc:  # the bus away: the next look tries again
                log.debug("bus usage not read: %s", exc)
            await asyncio.sleep(CHECK_S)

    async def stop(self) -> None:
        """Stop looking."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
