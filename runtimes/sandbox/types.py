"""Contracts of the sandbox: the limits a runner runs under, and its errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from eventbus.errors import DeepfaasError

Network = Literal["egress", "none"]
#: exit status a runner uses when it was told to stop
EXIT_OK: Final = 0


@dataclass(frozen=True)
class SandboxLimits:
    """What the kernel enforces on one sandboxed runner (rlimits set before user code loads)."""

    memory_mb: int = 256
    max_processes: int = 64
    max_open_files: int = 256
    max_file_mb: int = 64
    cpu_s: int = 3600
    tmp_mb: int = 64
    network: Network = "egress"

    def describe(self) -> str:
        """One line for logs and docs."""
        return (
            f"memory {self.memory_mb} MiB, {self.max_processes} processes, "
            f"{self.max_open_files} open files, files up to {self.max_file_mb} MiB, "
            f"CPU {self.cpu_s} s per runner, /tmp {self.tmp_mb} MiB, network {self.network}"
        )


class SandboxUnavailableError(DeepfaasError):
    """The sandbox cannot be started here (bubblewrap missing or refused)."""

    code = "sandbox_unavailable"
