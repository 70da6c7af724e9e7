"""Tell the control plane that a function has work waiting (``control.wake.<function>``).

A function scaled to zero gets a worker when the controller hears of its work: a wake, sent
by whoever queues an invocation (the gateway for sync, async and batch calls, the dispatcher
for a trigger's), or the controller's own poll of the queues (``reconcile_s``) for work queued
by anyone else. A wake is a hint, not a promise: it is core NATS (nothing stored), a lost one
costs only the poll's delay, and one function gets at most one every `WAKE_EVERY_S` from one
process, so a burst of a thousand async calls sends a handful.
"""

from __future__ import annotations

import contextlib
import time
from typing import Final

import nats.errors

from eventbus.connection import Bus
from eventbus.subjects import control_subject

#: at most one wake per function per process this often (below the controller's poll)
WAKE_EVERY_S: Final = 0.2
#: names remembered before the oldest are forgotten (a wake more is harmless)
_REMEMBERED: Final = 4096


class Waker:
    """Sends ``control.wake.<function>``, at most once per function every ``every`` seconds."""

    def __init__(self, bus: Bus, *, every: float = WAKE_EVERY_S) -> None:
        self.bus = bus
        self.every = every
        self._sent: dict[str, float] = {}

    async def wake(self, function: str, *, now: bool = False) -> None:
        """Wake ``function``'s runtime; ``now`` sends even within the interval (a caller that
        waits for the answer)."""
        at = time.monotonic()
        if not now and at - self._sent.get(function, -self.every) < self.every:
            return
        if len(self._sent) >= _REMEMBERED:
            self._sent.clear()
        self._sent[function] = at
        with contextlib.suppress(nats.errors.Error):  # the controller also polls the queues
            await self.bus.nc.publish(control_subject("wake", function), b"")
