"""Pulling batches from a durable consumer, the same way in every long-running consumer."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import nats.errors
from nats.aio.msg import Msg

log = logging.getLogger(__name__)


async def fetch_batch(sub: Any, batch: int, *, timeout: float = 1.0) -> list[Msg]:
    """Up to ``batch`` messages; none when nothing waits, or while the connection recovers."""
    try:
        return list(await sub.fetch(batch=batch, timeout=timeout))
    except (nats.errors.TimeoutError, TimeoutError):
        return []
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # connection loss: the client reconnects by itself
        log.debug("fetch failed: %s", exc)
        await asyncio.sleep(0.2)
        return []
