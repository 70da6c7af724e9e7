"""Pulling batches from a durable consumer, the same way in every long-running consumer."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import nats.errors
from nats.aio.msg import Msg

log = logging.getLogger(__name__)
#: seconds to wait after a failed fetch, while the client reconnects
PAUSE_S = 0.2


async def fetch(
    sub: Any, batch: int, *, timeout: float = 1.0, pause: float = PAUSE_S
) -> list[Msg] | None:
    """Up to ``batch`` messages, none when nothing waits; None when the fetch failed (the
    connection is recovering, or the consumer is gone), after ``pause`` seconds."""
    try:
        return list(await sub.fetch(batch=batch, timeout=timeout))
    except (nats.errors.TimeoutError, TimeoutError):
        return []
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # connection loss: the client reconnects by itself
        log.debug("fetch failed: %s", exc)
        await asyncio.sleep(pause)
        return None


async def fetch_batch(
    sub: Any, batch: int, *, timeout: float = 1.0, pause: float = PAUSE_S
) -> list[Msg]:
    """Up to ``batch`` messages; none when nothing waits, or while the connection recovers."""
    return await fetch(sub, batch, timeout=timeout, pause=pause) or []
