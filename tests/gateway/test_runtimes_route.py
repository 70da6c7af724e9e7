"""The read-only runtimes routes relay the controller's `control.runtimes` answer."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx
import orjson
from fastapi import FastAPI

from eventbus.errors import DeepfaasError, NotFoundError
from gateway import problems
from gateway.routes import runtimes

PENDING = {
    "function": "on-h100",
    "version": 1,
    "site": "local",
    "status": "pending",
    "reason": "no GPU free: 1 x H100 asked; site 'local' has 0 such GPU(s), 0 free",
    "desired": 1,
    "workers": 0,
    "ready": 0,
    "min_scale": 0,
    "max_scale": 4,
    "gpus": [],
    "pending_since": 1.0,
    "retiring": 0,
}


class FakeNats:
    """Answers `control.runtimes` as the controller does."""

    def __init__(self) -> None:
        self.asked: list[bytes] = []

    async def request(self, subject: str, data: bytes, timeout: float) -> Any:
        assert subject == "control.runtimes"
        self.asked.append(data)
        found = [PENDING] if data in (b"", b"on-h100") else []
        return SimpleNamespace(data=orjson.dumps({"runtimes": found, "prewarmed": {"size": 1}}))


class FakeRegistry:
    async def get(self, name: str) -> object:
        if name == "missing":
            raise NotFoundError(f"function {name!r} does not exist")
        return object()


def make_client() -> tuple[httpx.AsyncClient, FakeNats]:
    app = FastAPI()
    app.include_router(runtimes.router)
    app.add_exception_handler(DeepfaasError, problems.deepfaas_error_handler)
    nc = FakeNats()
    app.state.gateway = SimpleNamespace(bus=SimpleNamespace(nc=nc), registry=FakeRegistry())
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://gateway"), nc


async def test_one_function_runtime_shows_pending_and_its_reason() -> None:
    client, nc = make_client()
    async with client:
        body = (await client.get("/v1/functions/on-h100/runtime")).json()
        assert body["status"] == "pending" and "no GPU" in body["reason"]
        assert nc.asked == [b"on-h100"]
        other = (await client.get("/v1/functions/other/runtime")).json()
        assert other["status"] == "unknown"
        assert (await client.get("/v1/functions/missing/runtime")).status_code == 404


async def test_every_runtime_and_the_pool() -> None:
    client, _ = make_client()
    async with client:
        body = (await client.get("/v1/runtimes")).json()
    assert [r["function"] for r in body["runtimes"]] == ["on-h100"]
    assert body["prewarmed"] == {"size": 1}
