"""Settings of the `deploy` function (env prefix ``DEEPFAAS_``)."""

from __future__ import annotations

from pydantic import Field

from eventbus.settings import BusSettings


class DeploySettings(BusSettings):
    """How long the function waits for `rank` (placement's own settings are the controller's:
    `runtimes.placement.settings.PlacementSettings`)."""

    rank_timeout_s: float = Field(default=30.0, gt=0)
