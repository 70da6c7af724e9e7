"""Settings of the `deploy` function (env prefix ``DEEPFAAS_``)."""

from __future__ import annotations

from pydantic import Field

from eventbus.settings import BusSettings
from runtimes.providers.k8s_manifests import DEFAULT_IMAGE
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
    # `kubernetes` sites (docs/kubernetes.md)
    kubernetes_image: str = Field(
        default=DEFAULT_IMAGE, description="image of a runtime whose spec names none"
    )
    kubernetes_nats_url: str = Field(
        default="nats://nats:4222", description="the bus as worker pods reach it"
    )
    kubernetes_worker_secret: str | None = Field(
        default=None, description="Secret (runtimes' namespace) with the workers' bus credentials"
    )
    kubernetes_ca_file: str | None = Field(default=None, description="CA of the API servers")
