"""`up` registers the platform's own functions: settings changed since are kept, other code
stored under their names (before the registry refused it) is replaced by the platform's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from eventbus.connection import Bus
from eventbus.errors import ConflictError
from eventbus.server import EmbeddedNats
from eventbus.streams import FUNCTIONS_KV, ensure_layout
from gateway.builtins import register_builtins
from runtimes.specs import FunctionRegistry
from runtimes.types import FunctionSpec

CODE = "def main(params):\n    return params\n"


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[Bus]:
    """A bus of its own: the platform's function names must not meet other tests' platforms."""
    server = EmbeddedNats(store_dir=tmp_path / "nats").start()
    try:
        connected = await Bus.connect(server.admin_url, name="test-builtins")
        await ensure_layout(connected.js)
        yield connected
        await connected.close()
    finally:
        server.stop()


async def test_settings_are_kept_and_other_code_is_replaced(bus: Bus) -> None:
    registry = FunctionRegistry(bus)
    assert await register_builtins(bus, ["rank", "deploy"]) == ["rank", "deploy"]
    rank = await registry.get("rank")
    await registry.put(rank.model_copy(update={"min_scale": 2}))
    with pytest.raises(ConflictError, match="the platform's own"):
        await registry.put(FunctionSpec(name="deploy", handler="main", code=CODE))
    # as a registry before the refusal could store it
    hijacked = FunctionSpec(name="deploy", handler="main", code=CODE, version=9)
    kv = await bus.kv(FUNCTIONS_KV)
    await kv.put("deploy", hijacked.model_dump_json().encode())

    assert await register_builtins(bus, ["rank", "deploy"]) == ["deploy"]
    assert (await registry.get("rank")).min_scale == 2
    deploy = await registry.get("deploy")
    assert deploy.code is None and deploy.handler == "functions.deploy.handler:handle"
    assert deploy.version == 10
