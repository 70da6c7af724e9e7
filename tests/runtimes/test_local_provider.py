"""The local provider: stems of the prewarmed pool, GPU assignment, pending without a free GPU."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import orjson
import pytest
from nats.aio.msg import Msg

from eventbus.codec import to_nats
from eventbus.connection import Bus
from eventbus.invocations import new_invocation
from eventbus.streams import ensure_consumer, ensure_layout
from eventbus.types import run_subject
from runtimes.control.controller import runtime_spec
from runtimes.errors import CapacityError
from runtimes.providers.local import Gpu, LocalProvider
from runtimes.specs import FunctionRegistry
from runtimes.types import ActivationRecord, FunctionSpec, GpuRequest, RuntimeSpec
from tests.support import eventually, wait_for

NOOP = "def main(params):\n    return params\n"
A100S = [Gpu(0, "NVIDIA A100-SXM4-80GB", 81920), Gpu(1, "NVIDIA A100-SXM4-80GB", 81920)]


async def test_a_stem_becomes_the_function_and_the_pool_refills(
    nats_url: str, tmp_path: Path
) -> None:
    bus = await Bus.connect(nats_url, name="test-local")
    await ensure_layout(bus.js)
    env = {"DEEPFAAS_NATS_URL": nats_url, "DEEPFAAS_DATA_DIR": str(tmp_path)}
    provider = LocalProvider(env=env, log_dir=tmp_path / "logs", prewarm=1, gpus=[])
    assert provider.pool is not None
    ready = asyncio.Event()

    async def on_ready(msg: Msg) -> None:
        provider.mark_ready(int(orjson.loads(msg.data)["pid"]))
        if msg.subject.startswith("control.ready."):
            ready.set()

    subs = [
        await bus.nc.subscribe("control.stem", cb=on_ready),
        await bus.nc.subscribe("control.ready.*", cb=on_ready),
    ]
    try:
        await provider.start()
        pool = provider.pool
        await eventually(lambda: pool.ready == 1, timeout=30)
        stem_pid = pool.stems[0].process.pid
        spec = await FunctionRegistry(bus).put(
            FunctionSpec(name="stemfn", handler="main", code=NOOP)
        )
        await ensure_consumer(bus.js, spec.name, ack_wait=30)
        handle = await provider.provision(runtime_spec(spec))
        await provider.scale(handle, 1)
        [instance] = provider.instances(handle)
        assert instance["pid"] == stem_pid and instance["prewarmed"] is True
        await asyncio.wait_for(ready.wait(), 30)
        invocation = new_invocation(bus, "stemfn", b'{"x": 1}', source="/test", mode="sync")
        headers, data = to_nats(invocation)
        reply = await bus.nc.request(run_subject("stemfn"), data, headers=headers, timeout=10)
        record = ActivationRecord.model_validate_json(reply.data)
        assert record.status.value == "success" and record.result == {"x": 1}
        assert record.cold_start is True and record.init_ms is not None and record.init_ms > 0
        await eventually(
            lambda: bool(pool.stems) and pool.stems[0].process.pid != stem_pid, timeout=30
        )
    finally:
        for sub in subs:
            await sub.unsubscribe()
        await provider.close()
        await bus.close()


def fake_python(tmp_path: Path) -> tuple[str, Path]:
    """A stand-in interpreter that writes its CUDA_VISIBLE_DEVICES and sleeps."""
    out = tmp_path / "cuda.txt"
    exe = tmp_path / "fake-python"
    exe.write_text(f'#!/bin/sh\necho "$CUDA_VISIBLE_DEVICES" >> "{out}"\nexec sleep 60\n')
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return str(exe), out


async def test_each_gpu_worker_gets_a_free_gpu_and_the_rest_wait_pending(tmp_path: Path) -> None:
    python, out = fake_python(tmp_path)
    provider = LocalProvider(python=python, gpus=A100S, prewarm=1)
    try:
        await provider.start()  # a stem is there, and a GPU worker must not use it
        spec = RuntimeSpec(
            name="g", function="g", gpu=GpuRequest(count=1, model="a100"), max_scale=3
        )
        handle = await provider.provision(spec)
        await provider.scale(handle, 3)
        state = provider.describe(handle)
        assert state["workers"] == 2 and state["gpus"] == [0, 1]
        assert "no GPU free" in state["pending"] and "0 free" in state["pending"]
        assert "no GPU" in (await provider.status(handle)).message
        wait_for(lambda: out.exists() and sorted(out.read_text().split()) == ["0", "1"])
        assert not any(i["prewarmed"] for i in provider.instances(handle))
        assert provider.pool is not None and len(provider.pool.stems) == 1
        await provider.scale(handle, 1)
        assert provider.describe(handle)["pending"] == ""
    finally:
        await provider.close()


async def test_a_gpu_model_the_site_lacks_is_refused_or_kept_pending(tmp_path: Path) -> None:
    python, _ = fake_python(tmp_path)
    provider = LocalProvider(python=python, gpus=A100S)
    spec = RuntimeSpec(name="h", function="h", gpu=GpuRequest(count=1, model="H100"))
    try:
        with pytest.raises(CapacityError, match="H100"):
            await provider.provision(spec)
        handle = await provider.provision(spec, pending_ok=True)
        await provider.scale(handle, 1)
        state = provider.describe(handle)
        assert state["workers"] == 0 and "has 0 such GPU" in state["pending"]
    finally:
        await provider.close()


async def test_the_site_and_each_namespace_run_no_more_workers_than_their_budget(
    tmp_path: Path,
) -> None:
    """A tenant's scale (a min_scale, a burst of calls) cannot take the machine: past its
    namespace's budget, or the site's, a runtime stays pending with the reason, and gets its
    workers once others stop. Workers are a stand-in interpreter (`fake_python`)."""
    python, _ = fake_python(tmp_path)
    provider = LocalProvider(python=python, gpus=[], max_workers=3, namespace_max_workers=2)
    try:
        mine = await provider.provision(RuntimeSpec(name="a", function="a", max_scale=5))
        await provider.scale(mine, 5)
        state = provider.describe(mine)
        assert state["workers"] == 2
        assert "namespace 'default' runs 2 workers" in state["pending"]
        assert "namespace 'default'" in (await provider.status(mine)).message
        theirs = await provider.provision(
            RuntimeSpec(name="team-b=t", function="team-b=t", min_scale=3, max_scale=3)
        )
        state = provider.describe(theirs)
        assert state["workers"] == 1  # the site's third
        assert "site 'local' runs as many workers as it may (3)" in state["pending"]
        # one of the first namespace's stops: the other namespace gets its second worker
        await provider.scale(mine, 1)

        def converged() -> bool:
            return provider.describe(theirs)["workers"] == 2

        await eventually(converged, timeout=30)
        assert provider.describe(mine)["pending"] == ""
        assert "site 'local'" in provider.describe(theirs)["pending"]  # 3 of 3 again
    finally:
        await provider.close()


async def test_workers_still_stopping_count_against_the_budget(tmp_path: Path) -> None:
    """A released runtime's workers hold their memory until they exit: no other runtime gets
    their room before. Stand-in workers take about a second to stop; a new runtime that asks
    for a minimum the budget has no room for is refused unless it may wait (placement then
    tries another site)."""
    slow = tmp_path / "slow-python"
    slow.write_text("#!/bin/sh\ntrap 'sleep 1; exit 0' TERM\nsleep 60 &\nwait\n")
    slow.chmod(slow.stat().st_mode | stat.S_IEXEC)
    provider = LocalProvider(python=str(slow), gpus=[], max_workers=2, namespace_max_workers=2)
    try:
        first = await provider.provision(RuntimeSpec(name="a", function="a", min_scale=2))
        assert provider.describe(first)["workers"] == 2
        await asyncio.sleep(0.2)  # the shells have set their trap
        releasing = asyncio.create_task(provider.release(first))
        await asyncio.sleep(0.2)
        spec = RuntimeSpec(name="team-b=b", function="team-b=b", min_scale=1)
        with pytest.raises(CapacityError, match="as many workers as it may"):
            await provider.provision(spec)
        second = await provider.provision(spec, pending_ok=True)
        assert provider.describe(second)["workers"] == 0
        assert not releasing.done()
        await releasing
        await eventually(lambda: provider.describe(second)["workers"] == 1, timeout=30)
    finally:
        await provider.close()


async def test_room_freed_goes_to_the_runtime_that_waited_longest(tmp_path: Path) -> None:
    """Not to whichever runtime was registered first: `late` is registered before `early` but
    asks for its worker after, and the room one worker leaves goes to `early`."""
    python, _ = fake_python(tmp_path)
    provider = LocalProvider(python=python, gpus=[], max_workers=2, namespace_max_workers=2)
    try:
        full = await provider.provision(RuntimeSpec(name="full", function="full", min_scale=2))
        late = await provider.provision(
            RuntimeSpec(name="team-c=late", function="team-c=late", max_scale=1), pending_ok=True
        )
        early = await provider.provision(
            RuntimeSpec(name="team-b=early", function="team-b=early", min_scale=1),
            pending_ok=True,
        )
        await asyncio.sleep(0.05)
        await provider.scale(late, 1)
        assert provider.describe(early)["workers"] == provider.describe(late)["workers"] == 0
        await provider.scale(full, 1)  # one worker stops: room for one
        await eventually(lambda: provider.describe(early)["workers"] == 1, timeout=30)
        assert provider.describe(late)["workers"] == 0 and provider.describe(late)["pending"]
    finally:
        await provider.close()
