"""Settings every process shares: where the bus is, how to authenticate, how events are named."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from pydantic import ByteSize, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from eventbus.credentials import BusAuth, RoleCredentials
from eventbus.egress import EgressPolicy
from eventbus.streams import Layout
from eventbus.subjects import INBOX_ROOT


class BusSettings(BaseSettings):
    """Base of each process's settings class (env prefix ``DEEPFAAS_``)."""

    model_config = SettingsConfigDict(env_prefix="DEEPFAAS_", extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
    nats_creds: Path | None = Field(default=None, description="a NATS .creds file (JWT + nkey)")
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    nats_tls_ca: Path | None = Field(default=None, description="CA bundle to verify NATS with")
    nats_tls_cert: Path | None = Field(default=None, description="client certificate (PEM)")
    nats_tls_key: Path | None = Field(default=None, description="client certificate's key")
    nats_inbox_prefix: str = Field(
        default=INBOX_ROOT, pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
    )
    nats_credentials_dir: Path | None = Field(
        default=None,
        description="every platform role's credentials, as deepfaas's own nats-server keeps "
        "them (<data dir>/nats/credentials): each part of `deepfaas up` then connects as its role",
    )
    uvloop: bool = Field(
        default=True, description="run the process on uvloop (false: asyncio's own event loop)"
    )
    event_prefix: str = Field(default="io.deepfaas", pattern=r"^[a-z0-9]+(\.[a-z0-9-]+)+$")
    ack_wait_s: float = Field(default=30.0, gt=0, description="lease of an async invocation")
    retry_base_s: float = Field(default=1.0, ge=0, description="first retry delay")
    retry_max_s: float = Field(default=60.0, ge=0, description="longest retry delay")
    nats_replicas: int = Field(
        default=1,
        ge=1,
        le=5,
        description="replicas of every stream and KV bucket (3 on a cluster); an existing "
        "stream's are raised to this, never lowered",
    )
    nats_budget: ByteSize | None = Field(
        default=None,
        description="bytes all streams and buckets may keep, shared out per stream (e.g. "
        "`20GiB`); unset: half the free disk under the data dir when each is created",
    )
    nats_budgets: dict[str, ByteSize] = Field(
        default_factory=dict,
        description='bytes per stream or bucket, over the shares: JSON, e.g. {"INVOCATIONS": '
        '"64MiB", "activations": "1GiB"}',
    )
    schedule_clock: str = Field(
        default="system",
        pattern=r"^(system|file:.+)$",
        description="the schedulers' clock: `system`, or `file:<path>` holding the time (tests)",
    )
    schedule_grace_s: float = Field(
        default=30.0, gt=0, description="a tick found later than this was missed (catch_up)"
    )
    egress_allow: str = Field(
        default="",
        description="networks (comma-separated CIDRs) that callbacks and webhook sinks may "
        "reach besides global addresses: loopback, private and link-local ones are refused "
        "unless listed here (`eventbus.egress`)",
    )

    @field_validator(
        "nats_creds",
        "nats_user",
        "nats_password",
        "nats_tls_ca",
        "nats_tls_cert",
        "nats_tls_key",
        "nats_credentials_dir",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("egress_allow")
    @classmethod
    def _networks(cls, value: str) -> str:
        EgressPolicy.parse(value)  # a ValueError names the entry
        return value

    def egress(self) -> EgressPolicy:
        """Where callbacks and webhook sinks may go (`egress_allow` beside global addresses)."""
        return EgressPolicy.parse(self.egress_allow)

    def layout(self, disk: Path | None = None) -> Layout:
        """The bus layout these settings ask for; ``disk`` (a path on the bus's disk) gives
        the default budgets when none is set."""
        free = shutil.disk_usage(disk).free if disk is not None and disk.exists() else None
        return Layout(
            replicas=self.nats_replicas,
            budget=int(self.nats_budget) if self.nats_budget is not None else None,
            budgets={name: int(size) for name, size in self.nats_budgets.items()},
            disk_free=free,
        )

    def bus_auth(self, role: str | None = None) -> BusAuth:
        """What to connect with: ``role``'s generated credentials where the credentials dir is
        set, else the user/password or .creds file configured here; TLS files either way."""
        tls = BusAuth(
            tls_ca=self.nats_tls_ca, tls_cert=self.nats_tls_cert, tls_key=self.nats_tls_key
        )
        if role is not None and self.nats_credentials_dir is not None:
            return RoleCredentials.load(self.nats_credentials_dir, (role,)).auth(role, tls=tls)
        password = self.nats_password.get_secret_value() if self.nats_password else None
        return BusAuth(
            user=self.nats_user,
            password=password,
            creds=self.nats_creds,
            tls_ca=self.nats_tls_ca,
            tls_cert=self.nats_tls_cert,
            tls_key=self.nats_tls_key,
            inbox_prefix=self.nats_inbox_prefix,
        )
