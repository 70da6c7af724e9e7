"""Settings of the worker and the controller processes."""

from __future__ import annotations

import os
import socket

from pydantic import BaseModel, Field

from eventbus.settings import BusSettings
from eventbus.storage.settings import StorageSettings


class WorkerSettings(BusSettings, StorageSettings):
    """One worker process: which function it serves and how it reports."""

    function: str = Field(default="", description="empty only for a stem cell (`stem`)")
    version: int | None = None
    stem: bool = Field(default=False, description="start generic; read the function from stdin")
    preload: list[str] = Field(
        default_factory=list, description="modules a stem imports while it waits (JSON list)"
    )
    worker_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    heartbeat_s: float = 1.0
    drain_timeout_s: float = 30.0
    callback_tries: int = 3
    parent_pid: int | None = Field(default=None, description="exit when this process is gone")
    spawned_at: float | None = Field(default=None, description="epoch s the provider spawned it")


class GpuSetting(BaseModel):
    """One GPU of an injected inventory, e.g. ``DEEPFAAS_GPUS='[{"index":0,"model":"A100"}]'``."""

    index: int = Field(ge=0)
    model: str
    memory_mb: int = 0


class ControllerSettings(BusSettings):
    """The control plane: scaling local workers and rolling them on updates."""

    state_dir: str = ".deepfaas"
    reconcile_s: float = 0.25
    idle_release_s: float = 300.0
    worker_python: str | None = None
    prewarm: int = Field(default=1, ge=0, le=64, description="stem cells kept ready (0: none)")
    gpus: list[GpuSetting] | None = Field(
        default=None, description="GPU inventory as JSON (tests); None asks nvidia-smi"
    )
    gpu_wait_s: float = Field(
        default=120.0, gt=0, description="how long an invocation waits for a free GPU"
    )
