"""GPUs of this machine: discovered with nvidia-smi, or injected through settings (tests)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from runtimes.settings import GpuSetting


@dataclass(frozen=True)
class Gpu:
    """One GPU of this machine, as nvidia-smi reports it."""

    index: int
    model: str
    memory_mb: int


def discover_gpus(nvidia_smi: str | None = None) -> list[Gpu]:
    """GPUs visible through nvidia-smi; none when it is absent or fails."""
    exe = nvidia_smi or shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3 and parts[0].isdigit():
            gpus.append(Gpu(int(parts[0]), parts[1], int(float(parts[2] or 0))))
    return gpus


def gpu_inventory(injected: Sequence[GpuSetting] | None) -> list[Gpu]:
    """The injected inventory when settings give one, else what nvidia-smi reports."""
    if injected is None:
        return discover_gpus()
    return [Gpu(g.index, g.model, g.memory_mb) for g in injected]
