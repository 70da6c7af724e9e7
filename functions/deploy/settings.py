"""Settings of the `deploy` function (env prefix ``DEEPFAAS_``)."""

from __future__ import annotations

from pydantic import Field

from eventbus.settings import BusSettings
from runtimes.settings import GpuSetting


class DeploySettings(BusSettings):
    """Where the sites file and secrets are, and how long placement waits."""

    sites_file: str = Field(
        default="infra/sites.yaml", description="relative paths resolve against the project root"
    )
    secrets_dir: str | None = None
    ready_timeout_s: float = Field(default=60.0, gt=0, description="wait for a runtime to be ready")
    rank_timeout_s: float = Field(default=30.0, gt=0)
    gpus: list[GpuSetting] | None = Field(default=None, description="GPU inventory (tests)")
