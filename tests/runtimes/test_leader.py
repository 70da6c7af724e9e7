"""The leader lease (runtimes/control/leader.py) on a real nats-server, as the controller role
uses it."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from eventbus.connection import Bus
from eventbus.permissions import CONTROLLER
from eventbus.server import EmbeddedNats
from eventbus.streams import ensure_layout
from runtimes.control.leader import LeaderLease, create_lease, while_leader


class Clock:
    """A clock the test moves: lapses without waiting for them."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def bus(nats_server: EmbeddedNats) -> AsyncIterator[Bus]:
    admin = await Bus.connect(nats_server.url, name="t-admin", auth=nats_server.auth("admin"))
    await ensure_layout(admin.js)
    await admin.close()
    # the controller's own role: its permissions must allow the lease
    connected = await Bus.connect(
        nats_server.url, name="t-lease", auth=nats_server.auth(CONTROLLER)
    )
    yield connected
    await connected.close()


async def test_one_holder_at_a_time_and_takeover_after_the_lapse(bus: Bus) -> None:
    clock = Clock()
    name = "t-lapse"
    a = LeaderLease(bus, name, "a", ttl_s=3.0, clock=clock)
    b = LeaderLease(bus, name, "b", ttl_s=3.0, clock=clock)
    assert await a.try_acquire() and a.held
    assert not await b.try_acquire()
    clock.now += 2.9  # not yet lapsed
    assert not await b.try_acquire()
    assert await a.try_acquire()  # ours: renewed
    clock.now += 3.1
    assert await b.try_acquire() and b.held
    assert not await a.try_acquire()
    a.renew_s = 0.01
    # a's renewal finds the key rewritten by b: it learns it lost the lease and returns
    await asyncio.wait_for(a.keep(), 10)
    assert a.revision is None and not a.held


async def test_release_hands_over_at_once_and_two_standbys_race_for_one_win(bus: Bus) -> None:
    clock = Clock()
    name = "t-release"
    a = LeaderLease(bus, name, "a", ttl_s=30.0, clock=clock)
    assert await a.try_acquire()
    standbys = [LeaderLease(bus, name, f"s{i}", ttl_s=30.0, clock=clock) for i in range(4)]
    assert not any([await s.try_acquire() for s in standbys])
    await a.release()
    won = await asyncio.gather(*(s.try_acquire() for s in standbys))
    assert sum(won) == 1, won


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


async def test_a_dead_local_holder_of_the_same_scope_is_stale(bus: Bus, tmp_path: Path) -> None:
    scope = str(tmp_path)  # absolute already
    lease = create_lease(bus, "t-stale", scope, ttl_s=60.0)
    host, dead = socket.gethostname(), _dead_pid()
    assert lease.is_stale(f"{host}:{dead}:{scope}")
    assert not lease.is_stale(f"{host}:{os.getpid()}:{scope}")  # alive
    assert not lease.is_stale(f"{host}:{dead}:/elsewhere")
    assert not lease.is_stale(f"other-host:{dead}:{scope}")
    assert lease.holder == f"{host}:{os.getpid()}:{scope}"


async def test_while_leader_runs_the_work_only_while_holding(bus: Bus) -> None:
    name = "t-work"
    running: list[str] = []
    started = {h: asyncio.Event() for h in ("a", "b")}

    def lead(holder: str) -> object:
        async def work() -> None:
            running.append(holder)
            started[holder].set()
            try:
                await asyncio.Event().wait()
            finally:
                running.remove(holder)

        return work

    # a lease long enough for a loaded machine; the hand-over below is a release, not a lapse
    a = LeaderLease(bus, name, "a", ttl_s=6.0)
    b = LeaderLease(bus, name, "b", ttl_s=6.0)
    task_a = asyncio.create_task(while_leader(a, lead("a")))  # type: ignore[arg-type]
    task_b = None
    try:
        await asyncio.wait_for(started["a"].wait(), 10)
        task_b = asyncio.create_task(while_leader(b, lead("b")))  # type: ignore[arg-type]
        for _ in range(15):  # several of b's polls (every 2 s): b keeps standing by
            await asyncio.sleep(0.2)
            assert running == ["a"]
        task_a.cancel()  # a stops: its release hands over
        await asyncio.gather(task_a, return_exceptions=True)
        await asyncio.wait_for(started["b"].wait(), 10)
        assert running == ["b"]
    finally:
        for task in (task_a, task_b):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    assert running == []
