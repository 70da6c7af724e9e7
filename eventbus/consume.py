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
    if not hasattr(sub, _QUICK):
        _take_queued_at_once(sub)
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


_QUICK = "_deepfaas_quick_next"


def _take_queued_at_once(sub: Any) -> None:
    """Make the pull subscription hand its fetch a message that has arrived already without
    waiting for it. nats-py's fetch takes each message of a batch with ``next_msg``, which
    starts two tasks and draws a uuid for every message, queued or not: about 40 µs of CPU a
    message, two thirds of a fetch's cost (measured in bench/RESULTS.md). A queued message is
    now taken off the queue at once, with the same bookkeeping (private to the pinned nats-py;
    tests/eventbus/test_consume.py checks what a fetch returns and the counts it leaves); an
    empty queue, or a closed connection, still goes through ``next_msg`` itself.
    """
    setattr(sub, _QUICK, False)
    inner: Any = getattr(sub, "_sub", None)
    if not all(hasattr(inner, name) for name in ("_pending_queue", "_pending_size", "_conn")):
        log.warning("this nats-py has other internals: fetches take the slow path")
        return
    waiting = inner.next_msg

    async def next_msg(timeout: float | None = 1.0) -> Msg:
        queue = inner._pending_queue
        if queue.empty() or inner._conn.is_closed:
            return await waiting(timeout)  # type: ignore[no-any-return]
        msg: Msg = queue.get_nowait()
        inner._pending_size -= len(msg.data)
        queue.task_done()
        return msg

    inner.next_msg = next_msg
    setattr(sub, _QUICK, True)
