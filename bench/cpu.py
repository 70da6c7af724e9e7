"""The CPU each process of a platform spends per activation, and the rate that CPU allows.

A snapshot reads user + system time of `deepfaas up`, its nats-server and every process under
`up` (workers and fork servers; sandboxed runners and their bubblewrap) from ``/proc``. The
difference between two snapshots, divided by the activations in between, says where an
activation's CPU goes; the machine's cores divided by the sum is the most that many
activations a second could complete with nothing else running (the load generator, on the
same cores here, is not counted). A process that exits between the snapshots is left out.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.memory_bench import descendants

ROLES = ("up", "nats-server", "workers", "runners")


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _role(pid: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "workers"
    return "runners" if b"sandbox.runner" in cmdline or b"bwrap" in cmdline else "workers"


class CpuMeter:
    """Snapshots of CPU seconds by role for one platform."""

    def __init__(self, up_pid: int, nats_pid: int | None) -> None:
        self.up_pid = up_pid
        self.nats_pid = nats_pid

    def snapshot(self) -> dict[int, tuple[str, float]]:
        """CPU seconds of each process now, with its role."""
        found = {self.up_pid: ("up", _cpu_s(self.up_pid))}
        if self.nats_pid is not None:
            found[self.nats_pid] = ("nats-server", _cpu_s(self.nats_pid))
        try:
            under = descendants(self.up_pid)
        except OSError:  # `up` is gone
            under = []
        for pid in under:
            found[pid] = (_role(pid), _cpu_s(pid))
        return found

    def line(
        self, before: dict[int, tuple[str, float]], count: int, label: str, measured: float
    ) -> str:
        """``label``'s CPU ms per activation by role since ``before``, and the ceiling it sets."""
        used = dict.fromkeys(ROLES, 0.0)
        for pid, (role, now) in self.snapshot().items():
            used[role] += now - before.get(pid, (role, 0.0))[1]
        per = {role: seconds * 1000 / max(1, count) for role, seconds in used.items()}
        total = sum(per.values())
        cores = len(os.sched_getaffinity(0))
        ceiling = cores * 1000 / total if total else float("inf")
        parts = " + ".join(f"{role} {ms:.3f}" for role, ms in per.items())
        return (
            f"CPU per activation, {label}: {parts} = {total:.3f} ms; {cores} cores / that = "
            f"{ceiling:,.0f}/s (measured {measured:,.0f}/s)"
        )
