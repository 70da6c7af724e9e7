"""Running a process's main coroutine on uvloop (the default) or asyncio's own loop."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], *, uvloop: bool = True) -> T:
    """`asyncio.run` on uvloop when asked and installed, else on asyncio's selector loop.

    An entry point calls this once with its settings' ``uvloop`` (``DEEPFAAS_UVLOOP``): uvicorn's
    own ``loop="uvloop"`` has no effect on a server started inside a running loop.
    """
    if uvloop:
        try:
            import uvloop as _uvloop
        except ImportError:
            pass
        else:
            return _uvloop.run(main)
    return asyncio.run(main)


def freeze_startup(*, collect: bool = True) -> None:
    """Take what start-up allocated (modules, the app, indexes loaded) out of the garbage
    collector's full passes, which then walk only what came after.

    Each full pass stops the loop: in `deepfaas up` it walked ~240,000 objects in ~120 ms,
    every few seconds under load, and every request in flight waited. Call it once the process
    is serving; objects freed later by reference counting are still freed. ``collect=False``
    skips the full pass before (tens of ms over a heap just imported, on a cold start's
    clock): what start-up left in garbage cycles then stays, once.
    """
    if collect:
        gc.collect()
    gc.freeze()
