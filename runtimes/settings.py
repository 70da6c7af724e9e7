"""Settings of the worker and the controller processes."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from eventbus.egress import parse_networks
from eventbus.settings import BusSettings
from eventbus.storage.settings import StorageSettings
from runtimes.placement.settings import PlacementSettings
from runtimes.sandbox.types import Egress

DENY_SETTING = "DEEPFAAS_SANDBOX_DENY"


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
    sandbox: bool = Field(
        default=True,
        description="run user code in a bubblewrap sandbox (`off`: in this process, for a "
        "trusted single-user machine only)",
    )
    sandbox_dir: Path | None = Field(default=None, description="scratch dirs of the runners")
    sandbox_egress: Egress = Field(
        default="isolated",
        description="`network: egress` functions: `isolated` (a network namespace of their own, "
        "out through slirp4netns, the host's loopback unreachable) or `host` (the host's "
        "network, loopback included: only where nothing listens there, e.g. a pod of its own)",
    )
    sandbox_deny: str = Field(
        default="169.254.0.0/16,100.100.100.200/32",
        description="networks (comma-separated CIDRs) an isolated `egress` function cannot "
        "reach: by default the link-local range (a cloud's metadata service, which answers "
        "with the machine's credentials) and Alibaba Cloud's metadata address",
    )

    sandbox_uid_base: int = Field(default=100_000, ge=1000, description="runners' uids start here")
    sandbox_max_processes: int = Field(default=64, ge=1, le=4096)
    sandbox_max_open_files: int = Field(default=256, ge=16, le=65_536)
    sandbox_max_file_mb: int = Field(default=64, ge=1)
    sandbox_cpu_s: int = Field(default=3600, ge=1, description="CPU seconds of one runner")
    sandbox_tmp_mb: int = Field(default=64, ge=1, description="size of a runner's private /tmp")
    trusted_functions: str = Field(
        default="inference,retrain,rank,deploy",
        description="built-ins of `default` that run in the worker itself (comma-separated)",
    )

    @field_validator("sandbox_deny")
    @classmethod
    def _cidrs(cls, value: str) -> str:
        parse_networks(value, DENY_SETTING)  # a ValueError names the entry
        return value

    def sandbox_networks_denied(self) -> list[str]:
        """`sandbox_deny` as normalised CIDRs."""
        return [str(network) for network in parse_networks(self.sandbox_deny, DENY_SETTING)]


class GpuSetting(BaseModel):
    """One GPU of an injected inventory, e.g. ``DEEPFAAS_GPUS='[{"index":0,"model":"A100"}]'``."""

    index: int = Field(ge=0)
    model: str
    memory_mb: int = 0


class ControllerSettings(PlacementSettings):
    """The control plane: scaling local workers, rolling them on updates, placing deployments."""

    state_dir: str = ".deepfaas"
    reconcile_s: float = 0.25
    idle_release_s: float = 300.0
    worker_python: str | None = None
    prewarm: int = Field(default=1, ge=0, le=64, description="stem cells kept ready (0: none)")
    fork_server: bool = Field(
        default=True,
        description="fork CPU workers and stems from a process that imported the runtime once "
        "(copy-on-write, no credentials in it); false: spawn each one",
    )
    preload_models: bool = Field(
        default=True,
        description="the fork server also imports the installed model plug-ins (their "
        "frameworks: scikit-learn, ...), so a worker forked from it loads a model without "
        "importing them; costs the fork server ~2 s of CPU and ~125 MiB (shared) at start",
    )
    gpus: list[GpuSetting] | None = Field(
        default=None, description="GPU inventory as JSON (tests); None asks nvidia-smi"
    )
    gpu_wait_s: float = Field(
        default=120.0,
        gt=0,
        description="how long an invocation waits for a free GPU (or for the local site's "
        "worker budget)",
    )
    leader_ttl_s: float = Field(
        default=10.0,
        gt=0,
        description="the controller leader's lease: a standby takes over this long after the "
        "leader stopped renewing it (`runtimes.control.leader`)",
    )
