"""Running a process's main coroutine on uvloop (the default) or asyncio's own loop."""

from __future__ import annotations

import asyncio
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
