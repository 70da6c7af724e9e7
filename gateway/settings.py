"""Settings of the gateway process."""

from __future__ import annotations

from pydantic import Field

from eventbus.settings import BusSettings
from eventbus.storage.settings import StorageSettings
from gateway.auth.settings import AuthSettings


class GatewaySettings(BusSettings, StorageSettings, AuthSettings):
    """The HTTP front door (env prefix ``DEEPFAAS_``)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=6 * 1024 * 1024, ge=1024)
    sync_wait_s: float = Field(default=60.0, gt=0, description="longest wait of a sync invoke")
    public_url: str | None = Field(default=None, description="base URL clients use, for Location")
    sequence_hold_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="how long a gateway's hold on a running OpenWhisk sequence lasts unrenewed: "
        "after it another gateway (or this one restarted) resumes the sequence",
    )
    sandbox: bool = Field(
        default=True,
        description="user code runs in bubblewrap sandboxes; `off` only for a trusted "
        "single-user machine (refused while more than one namespace has keys)",
    )
