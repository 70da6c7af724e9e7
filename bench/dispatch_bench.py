"""Events dispatched per second with 1 and with 10,000 triggers registered.

Each run gets its own nats-server. The EVENTS stream is filled first (untimed) with storage
events that each match exactly one trigger; then a Dispatcher starts, and the time until it
has enqueued one invocation per event gives the rate (best of two runs each, interleaved).
A matching-only figure (no NATS) compares the index with a scan of every trigger's filters.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from eventbus.codec import to_nats
from eventbus.connection import Bus
from eventbus.dispatcher import Dispatcher
from eventbus.filters import FilterIndex, compile_filters
from eventbus.publish import MSG_ID_HEADER
from eventbus.server import EmbeddedNats
from eventbus.streams import FUNCTIONS_KV, TRIGGERS_KV, ensure_layout
from eventbus.triggers import Trigger
from eventbus.types import CloudEvent, event_subject
from tests.support import eventually

PREFIX = "io.deepfaas"
CREATED = f"{PREFIX}.storage.object.created"
RATE_GUESS = 4000  # events/s assumed when sizing the backlog to about `seconds` of work


def _event(n: int, bucket: str) -> CloudEvent:
    record = {"s3": {"bucket": {"name": bucket}, "object": {"key": f"in%2F{n}.jpg", "size": n}}}
    return CloudEvent.create(
        type=CREATED,
        source=f"/storage/local/{bucket}",
        subject=f"in/{n}.jpg",
        extensions={"bucket": bucket},
        data=record,
    )


async def _gather_chunked(coros: list[Awaitable[Any]], chunk: int = 1000) -> None:
    for start in range(0, len(coros), chunk):
        await asyncio.gather(*coros[start : start + chunk])


@dataclass
class Figures:
    """One run: trigger load time, dispatch rate, and time spent in full GC passes."""

    loaded_s: float
    rate: float
    enqueued: int
    elapsed_s: float
    full_gc_s: float


class FullGcClock:
    """Seconds spent in full (generation 2) garbage collections while running."""

    def __init__(self) -> None:
        self.total = 0.0
        self._began = 0.0

    def __enter__(self) -> FullGcClock:
        gc.callbacks.append(self._on_gc)
        return self

    def __exit__(self, *_: object) -> None:
        gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._began


async def _measure(n_triggers: int, n_events: int, timeout: float) -> Figures:
    """Fill EVENTS, start a dispatcher, and time it until every event is dispatched."""
    with tempfile.TemporaryDirectory() as tmp:
        nats = EmbeddedNats(store_dir=Path(tmp) / "nats").start()
        bus = await Bus.connect(nats.admin_url, name="bench", prefix=PREFIX)
        try:
            await ensure_layout(bus.js)
            functions = await bus.kv(FUNCTIONS_KV)
            await functions.put("thumbs", orjson.dumps({"name": "thumbs", "handler": "main"}))
            triggers = await bus.kv(TRIGGERS_KV)
            await _gather_chunked(
                [
                    triggers.put(
                        f"t{i}",
                        Trigger(name=f"t{i}", function="thumbs", bucket=f"b{i}")
                        .model_dump_json()
                        .encode(),
                    )
                    for i in range(n_triggers)
                ]
            )
            rng = random.Random(7)
            publishes: list[Awaitable[Any]] = []
            for n in range(n_events):
                event = _event(n, f"b{rng.randrange(n_triggers)}")
                headers, body = to_nats(event)
                headers[MSG_ID_HEADER] = event.id
                subject = event_subject(event.type, PREFIX)
                publishes.append(bus.js.publish(subject, body, headers=headers))
            await _gather_chunked(publishes)
            dispatcher = Dispatcher(bus, batch=256)
            t0 = time.perf_counter()
            await dispatcher.start(sync_timeout=60)
            loaded = time.perf_counter() - t0
            t1 = time.perf_counter()
            with FullGcClock() as clock, contextlib.suppress(AssertionError):
                await eventually(
                    lambda: dispatcher.stats["invocations_enqueued"] >= n_events,
                    timeout=timeout,
                    interval=0.005,
                )
            elapsed = time.perf_counter() - t1
            enqueued = dispatcher.stats["invocations_enqueued"]
            await dispatcher.stop()
            return Figures(loaded, enqueued / elapsed, enqueued, elapsed, clock.total)
        finally:
            await bus.close()
            nats.stop()


def _matching_only(n_triggers: int, n_events: int = 300) -> tuple[float, float]:
    """Events matched per second by the index and by scanning every filter set."""
    index: FilterIndex[str] = FilterIndex()
    scan = []
    for i in range(n_triggers):
        filters = Trigger(name=f"t{i}", function="f", bucket=f"b{i}").effective_filters(PREFIX)
        index.add(f"t{i}", filters)
        scan.append((f"t{i}", compile_filters(filters)))
    rng = random.Random(3)
    events = [_event(n, f"b{rng.randrange(n_triggers)}") for n in range(n_events)]
    t0 = time.perf_counter()
    for event in events:
        index.match(event)
    indexed = n_events / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for event in events:
        {key for key, predicate in scan if predicate(event)}
    return indexed, n_events / (time.perf_counter() - t0)


def run(seconds: float) -> list[str]:
    """Dispatch rate with 1 and with 10,000 triggers (best of two, interleaved), and the ratio."""
    n_events = max(500, int(seconds * RATE_GUESS))
    best: dict[int, Figures] = {}
    for n_triggers in (1, 10_000, 1, 10_000):
        figures = asyncio.run(_measure(n_triggers, n_events, timeout=seconds * 10))
        if n_triggers not in best or figures.rate > best[n_triggers].rate:
            best[n_triggers] = figures
    lines = []
    for n_triggers, f in best.items():
        lines.append(
            f"dispatch, {n_triggers:,} trigger(s): {f.enqueued:,} of {n_events:,} events in "
            f"{f.elapsed_s:.2f} s = {f.rate:,.0f} events/s (triggers loaded in "
            f"{f.loaded_s:.2f} s; full GC passes took {f.full_gc_s:.2f} s of it)"
        )
    ratio = best[10_000].rate / best[1].rate
    lines.append(
        f"dispatch rate with 10,000 triggers / with 1: {ratio:.2f} (an index keeps this near 1; "
        "what is left is mostly full GC passes over the larger heap)"
    )
    indexed, scanned = _matching_only(10_000)
    lines.append(
        f"matching only, 10,000 triggers: index {indexed:,.0f} events/s, "
        f"brute-force scan {scanned:,.0f} events/s ({indexed / scanned:,.0f}x)"
    )
    return lines


if __name__ == "__main__":
    for line in run(3.0):
        print(line, flush=True)
