"""`deepfaas up`'s own nats-server (as `make run` starts it) asks every client for credentials."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Iterator
from pathlib import Path

import nats.errors
import pytest
from nats.aio.client import Client as NATS

from eventbus.connection import Bus
from eventbus.permissions import ROLES
from tests.e2e.functions import HELLO
from tests.support import Platform, embedded_nats, start_platform


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    data_dir = Path(tmp_path_factory.mktemp("platform"))
    started = start_platform(embedded_nats(data_dir), data_dir)
    yield started
    started.stop()


async def _anonymous(url: str) -> None:
    nc = NATS()
    try:
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nc.connect(url, allow_reconnect=False, connect_timeout=2)
    finally:
        await nc.close()


async def _worker_reads_auth_keys(served: Platform) -> None:
    bus = await Bus.connect(served.nats.url, name="probe", auth=served.nats.auth("worker"))
    try:
        with pytest.raises(nats.errors.TimeoutError):
            await bus.nc.jetstream(timeout=0.5).key_value("auth_keys")
    finally:
        await bus.close()


def test_an_anonymous_client_is_refused(served: Platform) -> None:
    asyncio.run(_anonymous(served.nats.url))


def test_credentials_are_kept_private_in_the_data_dir(served: Platform) -> None:
    credentials = served.data_dir / "nats" / "credentials"
    assert {p.name for p in credentials.iterdir()} == {f"{role}.json" for role in ROLES}
    for path in [served.data_dir / "nats" / "nats.conf", *credentials.iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    asyncio.run(_worker_reads_auth_keys(served))


def test_workers_serve_with_their_role(served: Platform) -> None:
    with served.client() as client:
        r = client.put("/v1/functions/hello", json={"handler": "main", "code": HELLO})
        assert r.status_code in (200, 201), r.text
        r = client.post("/v1/functions/hello/invoke", json={"name": "Ada"})
        assert r.status_code == 200, r.text + served.log_text()
        assert r.json()["greeting"] == "Hello Ada!"
    # the server logs every refused publish or subscription: none by the platform's parts
    log = (served.data_dir / "nats" / "nats.log").read_text().splitlines()
    refused = [line for line in log if "Violation - Subject" in line and ":probe" not in line]
    assert refused == []
