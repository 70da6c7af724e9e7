"""Settings every process shares: where the bus is and how events are named."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class BusSettings(BaseSettings):
    """Base of each process's settings class (env prefix ``DEEPFAAS_``)."""

    model_config = SettingsConfigDict(env_prefix="DEEPFAAS_", extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
    event_prefix: str = Field(default="io.deepfaas", pattern=r"^[a-z0-9]+(\.[a-z0-9-]+)+$")
    ack_wait_s: float = Field(default=30.0, gt=0, description="lease of an async invocation")
    retry_base_s: float = Field(default=1.0, ge=0, description="first retry delay")
    retry_max_s: float = Field(default=60.0, ge=0, description="longest retry delay")
