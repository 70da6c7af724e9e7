"""Async throughput of invocations published straight on the bus (no gateway in the way).

A client publishes ``n`` invocation CloudEvents (binary mode, `ce-` headers) on the function's
work-queue subject with pipelined acks, as a service on the bus would; the rate is counted from
the first publish to the last completion event.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

from bench.throughput import Completions


async def bus_throughput(
    nats_url: str, *, function: str = "noop", n: int = 10_000, window: int = 1_000
) -> tuple[float, list[str]]:
    """Publish ``n`` invocations of ``function`` on ``invoke.<function>``; the completion rate."""
    completions = await Completions.follow(nats_url)
    js = completions.nc.jetstream()
    now = datetime.now(UTC).isoformat()
    run = uuid.uuid4().hex[:8]

    def headers(i: int) -> dict[str, str]:
        event_id = f"bus-{run}-{i}"
        return {
            "ce-specversion": "1.0",
            "ce-id": event_id,
            "ce-source": "/bench/bus",
            "ce-type": "io.deepfaas.invocation.requested",
            "ce-subject": function,
            "ce-time": now,
            "ce-mode": "async",
            "content-type": "application/json",
            "Nats-Msg-Id": event_id,
        }

    t0 = time.perf_counter()
    errors = 0
    for start in range(0, n, window):
        acks = await asyncio.gather(
            *(
                js.publish(f"invoke.{function}", b'{"x": 1}', headers=headers(i), timeout=30)
                for i in range(start, min(n, start + window))
            ),
            return_exceptions=True,
        )
        errors += sum(isinstance(ack, BaseException) for ack in acks)
    published = time.perf_counter() - t0
    accepted = n - errors
    total = await completions.settle(accepted, timeout=180) - t0
    completed = completions.count
    rate = completed / total
    return rate, [
        f"bus publish: {accepted:,} invocations stored in {published:.2f} s = "
        f"{accepted / published:,.0f}/s ({errors} errors)",
        f"bus-published async no-op accepted->completed: {completed} of {accepted} in "
        f"{total:.2f} s = {rate:,.0f}/s (target >= 10,000/s)",
    ]
