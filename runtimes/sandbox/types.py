"""Contracts of the sandbox: the limits a runner runs under, the spec it loads, its errors."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from eventbus.errors import DeepfaasError

Network = Literal["egress", "none"]
#: how `egress` reaches out: a namespace of its own through slirp4netns (the host's loopback
#: unreachable), or the host's own network (where its loopback holds nothing to protect)
Egress = Literal["isolated", "host"]
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


@dataclass(frozen=True)
class RunnerSpec:
    """What a runner reads of its function's spec, as plain values: the worker validated the
    `FunctionSpec` and sends its JSON, so the runner starts without pydantic or the models."""

    name: str
    handler: str
    code: str | None
    script: str | None
    version: int
    timeout_s: float
    concurrency: int
    env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> RunnerSpec:
        """From a `FunctionSpec` dumped as JSON (every field present)."""
        return cls(
            name=str(value["name"]),
            handler=str(value["handler"]),
            code=value["code"],
            script=value["script"],
            version=int(value["version"]),
            timeout_s=float(value["timeout_s"]),
            concurrency=int(value["concurrency"]),
            env={str(k): str(v) for k, v in value["env"].items()},
        )


class SandboxUnavailableError(DeepfaasError):
    """The sandbox cannot be started here (bubblewrap missing or refused)."""

    code = "sandbox_unavailable"


def required_tool(name: str, package: str, otherwise: str, *, also: tuple[str, ...] = ()) -> str:
    """Where the executable ``name`` is (on PATH, else one of ``also``: /usr/sbin is not on
    every user's PATH); SandboxUnavailableError naming ``package``'s install command and
    ``otherwise`` (the way around it) if it is missing."""
    found = shutil.which(name) or next((p for p in also if os.access(p, os.X_OK)), None)
    if found is None:
        raise SandboxUnavailableError(
            f"{name} is not installed: run `apt-get install -y {package}`, {otherwise}"
        )
    return found
