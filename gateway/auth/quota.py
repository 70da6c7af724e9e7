"""Per-namespace limits: a token bucket for the request rate, a counter for invocations."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class Quotas:
    """In-process limits of one gateway replica (each replica keeps its own)."""

    rate: float
    burst: int
    concurrency: int
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _inflight: dict[str, int] = field(default_factory=dict)

    def take(self, namespace: str, count: int = 1) -> float:
        """Take ``count`` requests from the namespace's rate; 0, or the seconds until they are
        free (nothing is taken then)."""
        now = time.monotonic()
        bucket = self._buckets.setdefault(namespace, _Bucket(float(self.burst), now))
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens >= count:
            bucket.tokens -= count
            return 0.0
        return (count - bucket.tokens) / self.rate

    def enter(self, namespace: str) -> bool:
        """Count one invocation in; False when the namespace is at its limit."""
        current = self._inflight.get(namespace, 0)
        if current >= self.concurrency:
            return False
        self._inflight[namespace] = current + 1
        return True

    def leave(self, namespace: str) -> None:
        """Count one invocation out."""
        self._inflight[namespace] = max(0, self._inflight.get(namespace, 1) - 1)
