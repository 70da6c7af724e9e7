"""Async throughput: accepted -> completed rate of no-op invocations, counted on the bus."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import orjson

from bench.loadgen import http_load
from tests.support import eventually


async def async_throughput(
    url: str, nats_url: str, seconds: float, *, prefix: str = "async"
) -> tuple[float, list[str]]:
    """The rate, and print-ready lines, of `?async=true` no-op invokes through the gateway.

    The raw HTTP generator (a child process) posts for ``seconds``; this process counts
    completion events until every accepted invocation has completed.
    """
    import nats as nats_client

    nc = await nats_client.connect(nats_url)
    completed = 0
    last = 0.0

    async def on_done(msg: Any) -> None:
        nonlocal completed, last
        completed += 1
        last = time.perf_counter()

    await nc.subscribe("events.activation.completed", cb=on_done)
    await nc.flush()
    t0 = time.perf_counter()
    load = await asyncio.to_thread(
        http_load,
        f"{prefix} invoke accepted via gateway",
        url,
        "/v1/functions/noop/invoke?async=true",
        b"{}",
        concurrency=32,
        seconds=seconds,
        warmup=0,
    )
    with contextlib.suppress(AssertionError):  # the row says how many completed
        await eventually(lambda: completed >= load.requests, timeout=120)
    await nc.close()
    total = (last or time.perf_counter()) - t0
    rate = completed / total
    return rate, [
        load.row(),
        f"async no-op accepted->completed: {completed} of {load.requests} in {total:.2f} s = "
        f"{rate:,.0f}/s (target >= 5,000/s)",
    ]


async def batch_throughput(
    url: str, nats_url: str, seconds: float, *, size: int = 1000, concurrency: int = 2
) -> tuple[float, list[str]]:
    """The same rate through the batch door: ``size`` no-op inputs per request."""
    import nats as nats_client

    nc = await nats_client.connect(nats_url)
    completed = 0
    last = 0.0

    async def on_done(msg: Any) -> None:
        nonlocal completed, last
        completed += 1
        last = time.perf_counter()

    await nc.subscribe("events.activation.completed", cb=on_done)
    await nc.flush()
    body = orjson.dumps({"inputs": [{"i": i} for i in range(size)]})
    t0 = time.perf_counter()
    load = await asyncio.to_thread(
        http_load,
        f"batch of {size} accepted via gateway",
        url,
        "/v1/functions/noop/invocations",
        body,
        concurrency=concurrency,
        seconds=seconds,
        warmup=0,
    )
    accepted = (load.requests - load.errors) * size
    with contextlib.suppress(AssertionError):
        await eventually(lambda: completed >= accepted, timeout=180)
    await nc.close()
    total = (last or time.perf_counter()) - t0
    rate = completed / total
    accepted_rate = accepted / load.seconds if load.seconds else 0.0
    return rate, [
        load.row(),
        f"batch door: {accepted_rate:,.0f} inputs/s accepted; accepted->completed {completed} of "
        f"{accepted} in {total:.2f} s = {rate:,.0f}/s (target >= 10,000/s)",
    ]
