"""A three-node NATS cluster is a setting: every stream and bucket replicated, any server a
client can reach, and the JetStream meta leader killed mid-load loses and repeats nothing."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats.errors
import orjson
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy, StreamInfo
from nats.js.errors import NotFoundError

from eventbus.connection import Bus
from eventbus.server import EmbeddedNats, cluster_url, create_cluster, free_port
from eventbus.storage_events import StorageLedger
from eventbus.streams import Layout, ensure_layout, stream_names
from tests.e2e.functions import NOOP
from tests.e2e.test_faults import ready_instances
from tests.e2e.test_invoke import deploy
from tests.support import Platform, eventually, start_platform, wait_for

#: the count the issue asks for; each is one small async invoke of a no-op function
INVOCATIONS = 1000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[EmbeddedNats]]:
    servers = create_cluster(Path(tmp_path_factory.mktemp("cluster")), 3)
    for server in servers:
        server.start(timeout=30)
    yield servers
    for server in servers:
        server.stop()


def _url(servers: list[EmbeddedNats], *, dead_first: bool = False) -> str:
    """The cluster's URLs with the admin login in the first (and a dead server first)."""
    auth = servers[0].auth("admin")
    urls = [s.url for s in servers]
    if dead_first:
        urls.insert(0, f"nats://127.0.0.1:{free_port()}")
    urls[0] = urls[0].replace("nats://", f"nats://{auth.user}:{auth.password}@")
    return ",".join(urls)


async def test_every_stream_is_replicated_and_never_lowered(cluster: list[EmbeddedNats]) -> None:
    # the first URL names no server: the client goes on to the others (a seed node down)
    bus = await Bus.connect(_url(cluster, dead_first=True), name="layout", connect_timeout=30)
    try:
        await ensure_layout(bus.js, Layout(replicas=3), private=True)
        await ensure_layout(bus.js, Layout(replicas=1), private=True)  # a process with R1
        for name in stream_names(private=True):
            info = await _info(bus, name)
            assert info.config.num_replicas == 3, name
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2, name
        # a bucket made later by a process given no layout (a bridge's own ledger) takes the
        # replicas of the layout in place
        await StorageLedger(bus, kv_bucket="ledger_later").ensure()
        assert (await _info(bus, "KV_ledger_later")).config.num_replicas == 3
    finally:
        await bus.close()


async def _info(bus: Bus, name: str) -> StreamInfo:
    """A stream's info once its replicas answer (a new R3 stream may be "not found" a while)."""

    async def replicated() -> StreamInfo | None:
        try:
            info = await bus.js.stream_info(name)
        except NotFoundError:
            return None
        return info if info.cluster is not None and len(info.cluster.replicas or []) == 2 else None

    with contextlib.suppress(AssertionError):  # else the caller's assertions say what is missing
        return await eventually(replicated, timeout=20, interval=0.2)
    return await bus.js.stream_info(name)


def _meta_leader(servers: list[EmbeddedNats]) -> EmbeddedNats:
    for server in servers:
        try:
            jsz = httpx.get(f"http://127.0.0.1:{server.http_port}/jsz", timeout=2).json()
        except httpx.HTTPError:
            continue
        leader = (jsz.get("meta_cluster") or {}).get("leader")
        for candidate in servers:
            if candidate.cluster is not None and candidate.cluster.name == leader:
                return candidate
    raise AssertionError("no JetStream meta leader")


@pytest.fixture(scope="module")
def clustered(
    cluster: list[EmbeddedNats], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    started = start_platform(
        cluster[0],
        Path(tmp_path_factory.mktemp("clustered")),
        nats_url=cluster_url(cluster),
        nats_replicas=3,
    )
    yield started
    started.stop()


async def _send(platform: Platform, count: int, halfway: threading.Event) -> list[httpx.Response]:
    # a connection per request: a kept-alive one that the server closes while idle (the
    # failover can pause answers past uvicorn's keep-alive) would read as a lost answer
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=0)
    async with httpx.AsyncClient(
        base_url=platform.url, auth=platform.basic_auth, timeout=60, limits=limits
    ) as client:
        gate = asyncio.Semaphore(16)

        async def one(i: int) -> httpx.Response:
            async with gate:
                if i == count // 3:
                    halfway.set()
                return await client.post("/v1/functions/noop/invoke?async=true", json={"i": i})

        return list(await asyncio.gather(*(one(i) for i in range(count))))


async def _completions(url: str) -> collections.Counter[str]:
    """How many `activation.completed` events each activation has on EVENTS."""
    bus = await Bus.connect(url, name="counter", connect_timeout=30)
    seen: collections.Counter[str] = collections.Counter()
    try:
        config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL, inactive_threshold=30.0)
        sub = await bus.js.pull_subscribe("activation.completed", config=config)
        while True:
            try:
                msgs = await sub.fetch(500, timeout=2)
            except TimeoutError:
                break
            for msg in msgs:
                seen[orjson.loads(msg.data)["activation_id"]] += 1
        await sub.unsubscribe()
    finally:
        await bus.close()
    return seen


@pytest.mark.timeout(300)  # 1,000 invocations through one gateway on a loaded 2-core machine
def test_meta_leader_killed_mid_load_every_accepted_invocation_completes_once(
    cluster: list[EmbeddedNats], clustered: Platform
) -> None:
    with clustered.client() as client:
        deploy(client, "noop", NOOP, min_scale=2, max_scale=2, concurrency=32)
        ready_instances(client, "noop", count=2)
    halfway = threading.Event()
    killed: list[EmbeddedNats] = []

    def kill_leader() -> None:
        halfway.wait(120)
        leader = _meta_leader(cluster)
        leader.stop(kill=True)
        killed.append(leader)

    killer = threading.Thread(target=kill_leader)
    killer.start()
    started = time.monotonic()
    answers = asyncio.run(_send(clustered, INVOCATIONS, halfway))
    sent = time.monotonic() - started
    killer.join()
    assert killed, "the meta leader was not killed"
    statuses = collections.Counter(r.status_code for r in answers)
    assert set(statuses) <= {202, 503}, statuses  # never a 500
    accepted = {r.json()["activation_id"] for r in answers if r.status_code == 202}
    unsure = {r.json().get("activation_id") for r in answers if r.status_code == 503} - {None}
    assert len(accepted) >= INVOCATIONS // 2, statuses
    live = [s for s in cluster if s not in killed]

    last: dict[str, Any] = {}

    def all_done() -> collections.Counter[str] | None:
        try:
            seen = asyncio.run(_completions(_url(live)))
        except (nats.errors.Error, TimeoutError) as exc:  # the cluster still electing
            last["error"] = repr(exc)
            return None
        last["missing"] = sorted(accepted - set(seen))
        return seen if accepted <= set(seen) else None

    try:
        seen: collections.Counter[str] = wait_for(all_done, timeout=90, interval=1)
    except AssertionError:
        with clustered.client() as client:
            missing = last.get("missing", [])
            records = [client.get(f"/v1/activations/{a}").text for a in missing[:3]]
        raise AssertionError(
            f"{len(missing)} not completed ({last.get('error')}): {records}"
        ) from None
    print(f"{statuses}: sent in {sent:.1f} s, all done {time.monotonic() - started:.1f} s after")
    assert all(seen[a] == 1 for a in accepted), [a for a in accepted if seen[a] != 1]
    assert set(seen) <= accepted | unsure  # nothing refused for sure ran
    with clustered.client() as client:
        sample: dict[str, Any] = client.get(f"/v1/activations/{next(iter(accepted))}").json()
    assert sample["status"] == "success" and sample["attempts"] >= 1
