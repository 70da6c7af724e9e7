"""Wait for a fact, never for time: poll a predicate until it holds or a deadline passes."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

T = TypeVar("T")

#: generous by default: tests share a loaded 2-core machine, and only a failing test waits this long
TIMEOUT_S = 20.0
INTERVAL_S = 0.05


def wait_for(
    predicate: Callable[[], T | None], timeout: float = TIMEOUT_S, interval: float = INTERVAL_S
) -> T:
    """Poll ``predicate()`` until it returns something truthy and return that, or fail.

    The predicate is asked at least once, and once more at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met in {timeout} s (last value: {value!r})")
        time.sleep(interval)


async def eventually(
    predicate: Callable[[], T | Awaitable[T | None] | None],
    timeout: float = TIMEOUT_S,
    interval: float = INTERVAL_S,
) -> T:
    """`wait_for` inside a coroutine: the predicate may be sync or async; the loop keeps running."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        value = cast(T | None, await result if inspect.isawaitable(result) else result)
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met in {timeout} s (last value: {value!r})")
        await asyncio.sleep(interval)
