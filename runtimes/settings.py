"""Settings of the worker and the controller processes."""

from __future__ import annotations

import os
import socket

from pydantic import Field

from eventbus.settings import BusSettings
from eventbus.storage.settings import StorageSettings


class WorkerSettings(BusSettings, StorageSettings):
    """One worker process: which function it serves and how it reports."""

    function: str
    version: int | None = None
    worker_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    heartbeat_s: float = 1.0
    drain_timeout_s: float = 30.0
    callback_tries: int = 3
    parent_pid: int | None = Field(default=None, description="exit when this process is gone")


class ControllerSettings(BusSettings):
    """The control plane: scaling local workers and rolling them on updates."""

    state_dir: str = ".deepfaas"
    reconcile_s: float = 0.25
    idle_release_s: float = 300.0
    worker_python: str | None = None
