"""Fixtures: every Storage backend, fresh per test; an S3 server from moto for the S3 one.

No MinIO server can run here (it is in neither Debian nor PyPI), so moto's server mode, a
real S3-protocol HTTP server on loopback, stands in for MinIO and other S3 endpoints.
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from moto.server import ThreadedMotoServer

from eventbus.storage import LocalStorage, S3Storage, Storage

PART_SIZE = 5 * 1024 * 1024  # the S3 minimum, so a 20 MB body takes four parts


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """``host:port`` of a moto S3 server in this process, for the whole session."""
    # werkzeug logs every request at INFO; keep failures readable
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop()


def make_s3(endpoint: str) -> S3Storage:
    """An S3Storage on the moto server, with small parts to exercise multipart uploads."""
    return S3Storage(
        endpoint,
        access_key="testing",
        secret_key="testing",
        secure=False,
        region="us-east-1",
        part_size=PART_SIZE,
    )


@pytest.fixture
async def s3(moto_endpoint: str) -> AsyncIterator[S3Storage]:
    """An S3Storage on a freshly reset moto server (no buckets)."""
    async with httpx.AsyncClient() as client:
        reset = await client.post(f"http://{moto_endpoint}/moto-api/reset")
        reset.raise_for_status()
    store = make_s3(moto_endpoint)
    yield store
    await store.close()


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalStorage]:
    """A LocalStorage in an empty temporary directory."""
    store = LocalStorage(tmp_path / "store")
    yield store
    await store.close()


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest) -> Storage:
    """Each backend in turn: the contract tests run once per backend."""
    store: Storage = request.getfixturevalue(request.param)
    return store


@pytest.fixture
async def bucket(storage: Storage) -> str:
    """A new, empty bucket in the store under test."""
    name = f"bkt-{uuid.uuid4().hex[:12]}"
    await storage.create_bucket(name)
    return name
