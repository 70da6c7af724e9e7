"""Open event streams end when the gateway stops (`close_streams`), so a server need not wait
for its server-sent-events clients to hang up: the gateway under uvicorn, on a real nats-server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from eventbus.connection import Bus
from eventbus.server import EmbeddedNats, free_port
from eventbus.streams import ensure_layout
from eventbus.types import EVENTS_STREAM
from gateway.app import create_app
from gateway.auth.bootstrap import ensure_first_key
from gateway.routes.events import POLL_S, close_streams
from gateway.settings import GatewaySettings
from tests.support import eventually


@pytest.fixture
async def served(
    nats_server: EmbeddedNats, tmp_path: Path
) -> AsyncIterator[tuple[uvicorn.Server, httpx.AsyncClient]]:
    admin = await Bus.connect(nats_server.url, name="test", auth=nats_server.auth("admin"))
    try:
        await ensure_layout(admin.js)
        credential = await ensure_first_key(admin, tmp_path)
    finally:
        await admin.close()
    assert credential is not None
    settings = GatewaySettings(
        nats_url=nats_server.url,
        nats_credentials_dir=nats_server.credentials_dir,
        data_dir=tmp_path,
        port=free_port(),
    )
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=settings.port, log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await eventually(lambda: server.started)
    key_id, _, secret = credential.partition(":")
    url = f"http://127.0.0.1:{settings.port}"
    async with httpx.AsyncClient(base_url=url, auth=(key_id, secret), timeout=10) as client:
        yield server, client
    server.should_exit = True
    async with asyncio.timeout(10):
        await task


async def test_close_streams_ends_every_open_stream(
    served: tuple[uvicorn.Server, httpx.AsyncClient],
) -> None:
    server, client = served
    async with (
        client.stream("GET", "/v1/events/stream") as first,
        client.stream("GET", "/v1/events/stream", params={"type": "x"}) as second,
    ):
        lines = [first.aiter_lines(), second.aiter_lines()]
        for each in lines:
            assert await anext(each) == ": subscribed"
        close_streams(server.config.app)
        async with asyncio.timeout(POLL_S + 3):  # each ends by itself, not by a timeout
            rest = [[line async for line in each] for each in lines]
    assert all(not line.startswith("data:") for got in rest for line in got)
    # a stream opened afterwards (the server has not yet stopped listening) ends at once too
    async with asyncio.timeout(POLL_S + 3):
        late = await client.get("/v1/events/stream")
    assert late.status_code == 200 and late.text.startswith(": subscribed")


class _ClosingServer(uvicorn.Server):
    """A server that ends the event streams as its shutdown begins (what `up` can do)."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        close_streams(self.config.app)
        await super().shutdown(sockets)


async def test_a_server_that_closes_streams_on_shutdown_stops_at_once(
    served: tuple[uvicorn.Server, httpx.AsyncClient],
) -> None:
    first, client = served
    config = uvicorn.Config(first.config.app, host="127.0.0.1", port=free_port(), lifespan="off")
    server = _ClosingServer(config)  # the same app (its lifespan ran): a second listener
    task = asyncio.create_task(server.serve())
    await eventually(lambda: server.started)
    url = f"http://127.0.0.1:{config.port}/v1/events/stream"
    async with client.stream("GET", url) as response:
        lines = response.aiter_lines()
        assert await anext(lines) == ": subscribed"
        server.should_exit = True  # as on SIGTERM
        async with asyncio.timeout(POLL_S + 3):
            rest = [line async for line in lines]  # a clean end: no protocol error
            await task
    assert all(not line.startswith("data:") for line in rest)


async def test_a_client_that_hangs_up_leaves_no_consumer_behind(
    served: tuple[uvicorn.Server, httpx.AsyncClient], nats_server: EmbeddedNats
) -> None:
    _, client = served
    admin = await Bus.connect(nats_server.url, name="test", auth=nats_server.auth("admin"))

    async def ephemeral() -> int:
        consumers = await admin.js.consumers_info(EVENTS_STREAM)
        return sum(1 for c in consumers if not c.config.durable_name)

    try:
        before = await ephemeral()
        for _ in range(3):
            async with client.stream("GET", "/v1/events/stream") as response:
                assert await anext(response.aiter_lines()) == ": subscribed"
                assert await ephemeral() > before  # the stream's own ordered consumer

        async def dropped() -> bool:  # the server drops a consumer without interest
            return await ephemeral() <= before

        await eventually(dropped)
    finally:
        await admin.close()
