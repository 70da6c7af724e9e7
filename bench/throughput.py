"""Async throughput: accepted -> completed rate of no-op invocations, counted on the bus."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import orjson

from bench.loadgen import http_load
from tests.support import eventually


class Completions:
    """Counts `activation.completed` events on the bus, and when the last one came."""

    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self.count = 0
        self.last = 0.0

    @classmethod
    async def follow(cls, nats_url: str) -> Completions:
        """Connected and subscribed (flushed) before the caller sends anything."""
        import nats as nats_client

        counter = cls(await nats_client.connect(nats_url))
        # `events.activation.completed` too: a commit before activation events had a root of
        # their own (`bench.pair --a-source`) publishes there
        for subject in ("activation.completed", "events.activation.completed"):
            await counter.nc.subscribe(subject, cb=counter._done)
        await counter.nc.flush()
        return counter

    async def _done(self, msg: Any) -> None:
        self.count += 1
        self.last = time.perf_counter()

    async def settle(self, expected: int, timeout: float) -> float:
        """Wait (at most ``timeout``) for ``expected`` completions, then close; the
        `perf_counter` time of the last one (now, if none came)."""
        with contextlib.suppress(AssertionError):  # the row says how many completed
            await eventually(lambda: self.count >= expected, timeout=timeout)
        await self.nc.close()
        return self.last or time.perf_counter()


def counts(line: str) -> tuple[int, int]:
    """(completed, accepted) of a throughput line's "... N of M in S s = R/s"."""
    before, _, after = line.rpartition(" of ")
    return int(before.split()[-1]), int(after.split()[0])


async def async_throughput(
    url: str, nats_url: str, seconds: float, *, prefix: str = "async"
) -> tuple[float, list[str]]:
    """The rate, and print-ready lines, of `?async=true` no-op invokes through the gateway.

    The raw HTTP generator (a child process) posts for ``seconds``; this process counts
    completion events until every accepted invocation has completed.
    """
    completions = await Completions.follow(nats_url)
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
    total = await completions.settle(load.requests, timeout=120) - t0
    completed = completions.count
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
    completions = await Completions.follow(nats_url)
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
    total = await completions.settle(accepted, timeout=180) - t0
    completed = completions.count
    rate = completed / total
    accepted_rate = accepted / load.seconds if load.seconds else 0.0
    return rate, [
        load.row(),
        f"batch door: {accepted_rate:,.0f} inputs/s accepted; accepted->completed {completed} of "
        f"{accepted} in {total:.2f} s = {rate:,.0f}/s (target >= 10,000/s)",
    ]
