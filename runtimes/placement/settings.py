"""Settings of placement, which the controller runs (env prefix ``DEEPFAAS_``)."""

from __future__ import annotations

from pydantic import Field

from eventbus.settings import BusSettings
from runtimes.providers.k8s_manifests import DEFAULT_IMAGE


class PlacementSettings(BusSettings):
    """Where the sites file and secrets are, how long placement waits, how often it reconciles."""

    sites_file: str = Field(
        default="infra/sites.yaml", description="relative paths resolve against the project root"
    )
    secrets_dir: str | None = None
    local_max_workers: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="workers the local site runs at most; None: one per 96 MiB of memory",
    )
    namespace_max_workers: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="workers one namespace runs on the local site at most; None: half the site's",
    )
    ready_timeout_s: float = Field(default=60.0, gt=0, description="wait for a runtime to be ready")
    deployments_reconcile_s: float = Field(
        default=30.0,
        gt=0,
        description="how often the leader re-places deployments whose runtime is gone",
    )
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
