"""How many workers a local site runs, and one namespace of it: the budget and its refusals.

By default one worker per `MEMORY_PER_WORKER` of the machine's memory (or of the cgroup's
limit, in a container), and half of that per namespace, so that no tenant's ``min_scale`` (or a
burst of calls) can take the machine.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from eventbus.namespaces import namespace_of

#: one worker (and its sandbox) per this much memory
MEMORY_PER_WORKER: Final = 96 << 20


@dataclass(frozen=True)
class WorkerBudget:
    """A site's worker budget and each namespace's share of it."""

    site: str
    max_workers: int
    namespace_max_workers: int

    @classmethod
    def of(
        cls, site: str, max_workers: int | None, namespace_max_workers: int | None
    ) -> WorkerBudget:
        """The budget asked for, the defaults where None."""
        total = max_workers or default_max_workers()
        return cls(site, total, namespace_max_workers or max(1, total // 2))

    def refusal(self, function: str, held: Mapping[str, int]) -> str:
        """Why one more worker of ``function`` may not start while ``held`` (workers running
        or stopping, by namespace: `held_by_namespace`) are, or ""."""
        if sum(held.values()) >= self.max_workers:
            return (
                f"site {self.site!r} runs as many workers as it may "
                f"({self.max_workers}); waiting for one to stop"
            )
        namespace = namespace_of(function)
        mine = held.get(namespace, 0)
        if mine >= self.namespace_max_workers:
            return (
                f"namespace {namespace!r} runs {mine} workers on site {self.site!r}, as many as "
                f"one namespace may; waiting for one of them to stop"
            )
        return ""


def held_by_namespace(functions: Iterable[str]) -> Counter[str]:
    """Workers by namespace, from the function name of each."""
    return Counter(namespace_of(function) for function in functions)


def default_max_workers() -> int:
    """One worker per `MEMORY_PER_WORKER` of the memory this machine (or the cgroup this
    process runs in, a container's limit) has: 8 at least, 1,024 at most."""
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 64
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            memory = min(memory, int(limit))
    return max(8, min(1024, memory // MEMORY_PER_WORKER))
