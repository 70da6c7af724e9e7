"""The gateway's function cache takes its own writes at once and ignores the watch's older news.

The watch is ordered but late: after a PUT or DELETE through this gateway it may still bring
an earlier version of the same name. That must not show through (a GET right after a PUT saw
the previous version, after a DELETE the deleted spec).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from eventbus.connection import Bus
from eventbus.errors import NotFoundError
from eventbus.streams import ensure_layout
from gateway.cache import FunctionCache
from runtimes.specs import FunctionRegistry
from runtimes.types import FunctionSpec
from tests.support import eventually

CODE = "def main(params):\n    return params\n"


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    connected = await Bus.connect(nats_url, name="test-function-cache")
    await ensure_layout(connected.js)
    yield connected
    await connected.close()


async def test_own_writes_win_over_the_watch_s_older_news(bus: Bus) -> None:
    registry = FunctionRegistry(bus)
    first = await registry.put(FunctionSpec(name="cached", handler="main", code=CODE))
    second = await registry.put(first.model_copy(update={"timeout_s": 5.0}))
    cache = FunctionCache(bus)  # not started: the watch's news are handed in one by one
    cache.remember(second)
    cache._apply("cached", first, current_state=False)  # version 1, late
    assert cache.get("cached").version == 2
    cache._apply("cached", second, current_state=False)  # the write itself: confirmed
    assert not cache._unconfirmed
    third = second.model_copy(update={"version": 3, "updated": datetime.now(UTC)})
    cache._apply("cached", third, current_state=False)  # news after it are newer: taken
    assert cache.get("cached").version == 3

    cache.forget("cached")
    cache._apply("cached", third, current_state=False)  # a late PUT of the deleted spec
    with pytest.raises(NotFoundError):
        cache.get("cached")
    cache._apply("cached", None, current_state=False)  # the delete itself
    assert not cache._unconfirmed


async def test_the_watch_confirms_what_this_process_wrote(bus: Bus) -> None:
    registry = FunctionRegistry(bus)
    cache = FunctionCache(bus)
    await cache.start()
    try:
        for version in (1, 2, 3):
            spec = await registry.put(FunctionSpec(name="watched", handler="main", code=CODE))
            cache.remember(spec)
            assert cache.get("watched").version == version
        await eventually(lambda: not cache._unconfirmed, timeout=10)
        assert cache.get("watched").version == 3
        await registry.delete("watched")
        cache.forget("watched")
        await eventually(lambda: not cache._unconfirmed, timeout=10)
        with pytest.raises(NotFoundError):
            cache.get("watched")
        # a write from elsewhere (nothing remembered here) is followed as the watch brings it
        other = await registry.put(FunctionSpec(name="watched", handler="main", code=CODE))
        await eventually(lambda: cache.specs.get("watched") == other, timeout=10)
    finally:
        await cache.stop()
