"""Async throughput of invocations published straight on the bus (no gateway in the way).

A client publishes ``n`` invocation CloudEvents (binary mode, `ce-` headers) on the function's
work-queue subject with pipelined acks, as a service on the bus would; the rate is counted from
the first publish to the last completion event.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from tests.support import eventually


async def bus_throughput(
    nats_url: str, *, function: str = "noop", n: int = 10_000, window: int = 1_000
) -> tuple[float, list[str]]:
    """Publish ``n`` invocations of ``function`` on ``invoke.<function>``; the completion rate."""
    import nats as nats_client

    nc = await nats_client.connect(nats_url)
    js = nc.jetstream()
    completed = 0
    last = 0.0

    async def on_done(msg: Any) -> None:
        nonlocal completed, last
        completed += 1
        last = time.perf_counter()

    await nc.subscribe("events.activation.completed", cb=on_done)
    await nc.flush()
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
    with contextlib.suppress(AssertionError):  # the row says how many completed
        await eventually(lambda: completed >= accepted, timeout=180)
    await nc.close()
    total = (last or time.perf_counter()) - t0
    rate = completed / total
    return rate, [
        f"bus publish: {accepted:,} invocations stored in {published:.2f} s = "
        f"{accepted / published:,.0f}/s ({errors} errors)",
        f"bus-published async no-op accepted->completed: {completed} of {accepted} in "
        f"{total:.2f} s = {rate:,.0f}/s (target >= 10,000/s)",
    ]
