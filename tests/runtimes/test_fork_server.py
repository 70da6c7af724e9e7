"""The fork server: forked workers answer, hold nothing of it, and outlive a kill -9 of it."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from eventbus.codec import to_nats
from eventbus.connection import Bus
from eventbus.invocations import new_invocation
from eventbus.streams import ensure_consumer, ensure_layout
from eventbus.types import run_subject
from runtimes.control.controller import runtime_spec
from runtimes.providers.local import LocalProvider
from runtimes.specs import FunctionRegistry
from runtimes.types import ActivationRecord, FunctionSpec, RuntimeHandle
from tests.support import eventually

NOOP = "def main(params):\n    return params\n"
CANARY = "canary-secret-7f3a"


@dataclass
class Site:
    """A provider with a fork server on a real nats-server, and the bus to call through."""

    bus: Bus
    provider: LocalProvider
    data_dir: Path
    password: str


@pytest.fixture
async def site(nats_url: str, tmp_path: Path) -> AsyncIterator[Site]:
    bus = await Bus.connect(nats_url, name="test-forks")
    await ensure_layout(bus.js)
    env = {
        "DEEPFAAS_NATS_URL": nats_url,
        "DEEPFAAS_DATA_DIR": str(tmp_path / "data"),
        "DEEPFAAS_STORAGE_S3_SECRET_KEY": CANARY,
    }
    provider = LocalProvider(env=env, log_dir=tmp_path / "logs", gpus=[], fork_server=True)

    async def on_ready(msg: Msg) -> None:
        provider.mark_ready(int(orjson.loads(msg.data)["pid"]))

    sub: Subscription = await bus.nc.subscribe("control.ready.*", cb=on_ready)
    try:
        await provider.start()
        forks = provider.forks
        assert forks is not None
        await eventually(lambda: forks.ready, timeout=90)
        yield Site(bus, provider, tmp_path / "data", urlsplit(nats_url).password or CANARY)
    finally:
        await sub.unsubscribe()
        await provider.close()
        await bus.close()


async def serve(site: Site, name: str, replicas: int = 1) -> RuntimeHandle:
    spec = await FunctionRegistry(site.bus).put(FunctionSpec(name=name, handler="main", code=NOOP))
    await ensure_consumer(site.bus.js, spec.name, ack_wait=30)
    handle = await site.provider.provision(runtime_spec(spec))
    await site.provider.scale(handle, replicas)
    await eventually(lambda: site.provider.describe(handle)["ready"] >= replicas, timeout=90)
    return handle


async def call(site: Site, name: str, value: int) -> ActivationRecord:
    body = orjson.dumps({"x": value})
    invocation = new_invocation(site.bus, name, body, source="/t", mode="sync")
    headers, data = to_nats(invocation)
    reply = await site.bus.nc.request(run_subject(name), data, headers=headers, timeout=30)
    record = ActivationRecord.model_validate_json(reply.data)
    assert record.status.value == "success" and record.result == {"x": value}, record
    return record


def environ(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in map(int, Path(task, "children").read_text().split()):
            found += [child, *children_of(child)]
    return found


def fd_targets(pid: int) -> set[str]:
    targets = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            targets.add(os.readlink(fd))
        except OSError:
            continue
    return targets


def runner_of(worker: int) -> int:
    """The Python runner inside the sandbox (not the bwrap processes around it)."""
    for pid in children_of(worker):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"runtimes.sandbox.runner" in argv and not argv[0].endswith(b"bwrap"):
            return pid
    raise AssertionError(f"worker {worker} has no sandboxed runner")


async def test_a_forked_worker_answers_and_nothing_forked_holds_what_it_should_not(
    site: Site,
) -> None:
    forks = site.provider.forks
    assert forks is not None and forks.pid is not None
    handle = await serve(site, "forked")
    [instance] = site.provider.instances(handle)
    worker = int(instance["pid"])
    assert parent_of(worker) == forks.pid  # forked, not spawned
    record = await call(site, "forked", 1)
    assert record.cold_start is True and record.init_ms is not None

    # the fork server: none of the platform's settings or credentials, no file open
    zygote_env = environ(forks.pid)
    assert CANARY.encode() not in zygote_env and site.password.encode() not in zygote_env
    assert b"DEEPFAAS_" not in zygote_env
    zygote_fds = fd_targets(forks.pid)
    files = {t for t in zygote_fds if not t.startswith(("socket:", "pipe:", "/dev/null"))}
    assert {Path(t).name for t in files} <= {"fork-server.log"}, zygote_fds  # its own log
    # the worker (which connected with the credentials of its own pipe) kept no fd of the server
    shared = {t for t in zygote_fds if t.startswith("socket:")} & fd_targets(worker)
    assert not shared, f"the worker holds the fork server's socket {shared}"
    # its sandboxed runner: no credential in its environment, no file of the platform open
    runner = runner_of(worker)
    runner_env = environ(runner)
    assert CANARY.encode() not in runner_env and site.password.encode() not in runner_env
    assert b"DEEPFAAS_" not in runner_env
    runner_fds = fd_targets(runner)
    assert not any(str(site.data_dir) in t for t in runner_fds), runner_fds
    assert not {t for t in zygote_fds if t.startswith("socket:")} & runner_fds


async def test_a_killed_fork_server_is_replaced_and_its_workers_keep_serving(site: Site) -> None:
    forks = site.provider.forks
    assert forks is not None and forks.pid is not None
    handle = await serve(site, "survivor")
    [instance] = site.provider.instances(handle)
    old_worker, old_server = int(instance["pid"]), forks.pid
    os.kill(old_server, signal.SIGKILL)
    await eventually(lambda: not forks.alive, timeout=30)
    await call(site, "survivor", 2)  # the worker does not depend on the fork server

    # a second worker starts anyway (spawned, or forked by the next fork server) and serves
    await site.provider.scale(handle, 2)
    await eventually(lambda: site.provider.describe(handle)["ready"] >= 2, timeout=90)
    for i in range(4):
        await call(site, "survivor", 10 + i)

    def replaced() -> bool:
        forks = site.provider.forks
        return forks is not None and forks.ready and forks.pid != old_server

    await eventually(replaced, timeout=90)

    # the orphaned worker is still the provider's: scaling down stops it through its pidfd
    await site.provider.scale(handle, 0)
    await eventually(lambda: _gone(old_worker), timeout=60)


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
