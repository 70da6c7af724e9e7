"""The layout's budgets and replicas: derived once from the free disk, set budgets applied,
per-stream discard policies, several server URLs with one login."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from nats.js.api import DiscardPolicy

from eventbus.connection import Bus, split_servers
from eventbus.minio_bridge import MINIO_SHARE, ensure_minio_stream
from eventbus.server import EmbeddedNats, free_port
from eventbus.storage_events import StorageLedger
from eventbus.streams import (
    BUCKETS,
    DISK_SHARE,
    LEDGER_KV,
    STREAMS,
    Layout,
    ensure_layout,
    stream_names,
    usage,
)
from eventbus.types import EVENTS_STREAM, INVOCATIONS_STREAM

GIB = 1024**3


@pytest.fixture
async def bus(nats_server: EmbeddedNats) -> AsyncIterator[Bus]:
    auth = nats_server.auth("admin")
    # a login in the first URL serves every server; a dead one first is passed over
    url = f"nats://{auth.user}:{auth.password}@127.0.0.1:{free_port()},{nats_server.url}"
    connected = await Bus.connect(url, name="layout-test")
    yield connected
    await connected.close()


async def _max_bytes(bus: Bus, name: str) -> int:
    return int((await bus.js.stream_info(name)).config.max_bytes or -1)


async def test_budgets_derive_once_and_settings_apply(bus: Bus) -> None:
    await ensure_layout(bus.js, Layout(disk_free=10 * GIB), private=True)
    events_share = next(s.share for s in STREAMS if s.name == EVENTS_STREAM)
    derived = int(10 * GIB * DISK_SHARE * events_share)
    assert await _max_bytes(bus, EVENTS_STREAM) == derived
    for name in stream_names(private=True):
        assert await _max_bytes(bus, name) > 0, name
    # at the limit: the work queue and definitions refuse, records and events drop the oldest
    policies = {
        name: (await bus.js.stream_info(name)).config.discard
        for name in (INVOCATIONS_STREAM, EVENTS_STREAM, "KV_functions", "KV_activations")
    }
    assert policies == {
        INVOCATIONS_STREAM: DiscardPolicy.NEW,
        EVENTS_STREAM: DiscardPolicy.OLD,
        "KV_functions": DiscardPolicy.NEW,
        "KV_activations": DiscardPolicy.OLD,
    }
    # a later start on a fuller disk keeps what the first start chose
    await ensure_layout(bus.js, Layout(disk_free=GIB), private=True)
    await ensure_layout(bus.js)  # a process with no budget at all
    assert await _max_bytes(bus, EVENTS_STREAM) == derived
    # a budget that is set applies to existing streams
    await ensure_layout(bus.js, Layout(budgets={EVENTS_STREAM: 1 << 20, "activations": 1 << 21}))
    assert await _max_bytes(bus, EVENTS_STREAM) == 1 << 20
    assert await _max_bytes(bus, "KV_activations") == 1 << 21
    await ensure_layout(bus.js, Layout(budget=GIB))
    assert await _max_bytes(bus, EVENTS_STREAM) == int(GIB * events_share)
    found = {u.name: u for u in await usage(bus.js)}
    assert found[EVENTS_STREAM].budget == int(GIB * events_share)
    assert found[INVOCATIONS_STREAM].discard == "new"
    # MinIO's stream, declared by its bridge, takes the same replicas and its share
    await ensure_minio_stream(bus, stream="MINIO_B", subject="minio.b", layout=Layout(budget=GIB))
    assert await _max_bytes(bus, "MINIO_B") == int(GIB * MINIO_SHARE)
    await ensure_minio_stream(bus, stream="MINIO_B", subject="minio.b")  # no budget: kept
    assert await _max_bytes(bus, "MINIO_B") == int(GIB * MINIO_SHARE)


async def test_a_bucket_made_outside_ensure_layout_is_made_as_the_layout_declares_it(
    bus: Bus,
) -> None:
    # the storage bridge makes its ledger itself (split mode runs no private ensure_layout)
    await StorageLedger(bus, kv_bucket="ledger_made", layout=Layout(budget=GIB)).ensure()
    config = (await bus.js.stream_info("KV_ledger_made")).config
    share = next(b.share for b in BUCKETS if b.bucket == LEDGER_KV)
    assert config.max_bytes == int(GIB * share)
    assert config.discard == DiscardPolicy.NEW


def test_servers_split_with_one_login() -> None:
    servers, login = split_servers("nats://u:p%40ss@h1:4222, nats://h2:4223,h3")
    assert servers == ["nats://h1:4222", "nats://h2:4223", "nats://h3"]
    assert login == ("u", "p@ss")
    assert split_servers("nats://tok@h1")[1] == ("tok", None)
