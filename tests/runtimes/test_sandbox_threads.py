"""A busy sandboxed runner never mistakes its own threads for the function's processes.

Sync handlers run in a pool of ``concurrency + 2`` threads inside the runner. Started lazily
under load, each thread's 8 MiB stack counted against the memory limit (RLIMIT_DATA), so a
no-op with ``concurrency: 48`` failed near its 28th thread with "can't start new thread",
reported as ``process limit N exceeded`` and final: dead-lettered for the platform's fault.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from eventbus.buckets import BucketOwners
from eventbus.connection import Bus
from eventbus.streams import ensure_layout
from runtimes.sandbox import SandboxLimits
from runtimes.sandbox.host import SandboxedExecutor, SandboxFactory
from runtimes.types import ActivationStatus, Context, FunctionSpec

pytestmark = pytest.mark.timeout(120)

BUSY = "import time\ndef main(args):\n    time.sleep(0.5)\n    return args\n"
THREAD_BOMB = (
    "import threading, time\n"
    "def main(args):\n"
    "    for _ in range(500):\n"
    "        threading.Thread(target=time.sleep, args=(5,), daemon=True).start()\n"
    "    return 'unbounded'\n"
)


@pytest.fixture
async def owners(nats_url: str) -> AsyncIterator[BucketOwners]:
    bus = await Bus.connect(nats_url, name="sandbox-threads-test")
    await ensure_layout(bus.js)
    owners = BucketOwners(bus)
    await owners.start()
    yield owners
    await owners.stop()
    await bus.close()


def _ctx() -> Context:
    return Context(
        activation_id=f"act-{time.monotonic_ns()}",
        function="busy",
        version=1,
        deadline=time.time() + 60,
        logger=logging.getLogger("deepfaas.fn.test"),
    )


async def test_every_concurrency_slot_runs_and_a_thread_bomb_still_hits_the_limit(
    tmp_path: Path, owners: BucketOwners
) -> None:
    factory = SandboxFactory(
        root=tmp_path / "sandbox",
        uid=150_001,
        exclude=[],
        limits=SandboxLimits(max_processes=16),
        label="threads",
    )
    busy = FunctionSpec(name="busy", handler="main", code=BUSY, concurrency=48)
    executor = SandboxedExecutor(busy, factory, storage=None, owners=owners)
    try:
        outcomes = await asyncio.gather(
            *(executor.run(orjson.dumps({"i": i}), None, _ctx()) for i in range(48))
        )
    finally:
        await executor.close()
    failed = [o.error for o in outcomes if o.status is not ActivationStatus.SUCCESS]
    assert failed == [], failed[:3]
    assert sorted(o.result["i"] for o in outcomes) == list(range(48))

    bomb = FunctionSpec(name="bomb", handler="main", code=THREAD_BOMB)
    executor = SandboxedExecutor(bomb, factory, storage=None, owners=owners)
    try:
        out = await executor.run(b"{}", None, _ctx())
    finally:
        await executor.close()
    assert out.status is ActivationStatus.ERROR and out.final, out
    assert out.error == "process limit 16 exceeded"
