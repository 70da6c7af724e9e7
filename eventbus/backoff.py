"""Exponential back-off, written once: how long to wait before a retry."""

from __future__ import annotations

from dataclasses import dataclass

#: doublings past which the delay is the cap anyway (keeps ``2 ** n`` a small number)
_MAX_DOUBLINGS = 32


@dataclass(frozen=True)
class Backoff:
    """Delays that start at ``base`` seconds and double on every try, up to ``cap``."""

    base: float
    cap: float

    def delay(self, attempt: int) -> float:
        """The wait before retry number ``attempt`` (1 and below: ``base``), at most ``cap``."""
        doublings = min(max(0, attempt - 1), _MAX_DOUBLINGS)
        return float(min(self.cap, self.base * 2**doublings))
