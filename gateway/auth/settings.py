"""Settings of auth, OIDC and per-namespace limits (mixed into `GatewaySettings`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AuthSettings(BaseSettings):
    """Who may call, and how much (env prefix ``DEEPFAAS_``)."""

    model_config = SettingsConfigDict(env_prefix="DEEPFAAS_", extra="ignore")

    oidc_issuer: str | None = Field(default=None, description="accept bearer tokens of this `iss`")
    oidc_audience: str | None = Field(default=None, description="the `aud` tokens must carry")
    oidc_jwks_url: str | None = Field(default=None, description="where the signing keys are")
    oidc_jwks_file: Path | None = Field(default=None, description="or a JWKS file")
    oidc_namespace_claim: str = Field(default="namespace", description="claim naming the ns")
    oidc_algorithms: str = Field(default="RS256,RS384,RS512,ES256,PS256")
    ns_rate_per_s: float = Field(default=1000.0, gt=0, description="requests/s per namespace")
    ns_burst: int = Field(default=2000, ge=1, description="requests allowed at once over the rate")
    ns_concurrency: int = Field(default=500, ge=1, description="invocations in flight per ns")
    max_result_bytes: int = Field(default=1 << 20, ge=1, description="largest inline result")
    action_timeout_min_s: float = Field(default=0.1, gt=0)
    action_timeout_max_s: float = Field(default=3600.0, gt=0)
    anonymous_predict: str = Field(
        default="",
        description="comma-separated models whose `/v2/models/{name}/predict/` needs no "
        "credential (DEEPaaS deployments are often open); off (empty) by default",
    )
    anonymous_predict_rate_per_s: float = Field(
        default=2.0, gt=0, description="anonymous predictions/s per open model, all callers"
    )
    anonymous_predict_burst: int = Field(default=10, ge=1, description="over that rate at once")

    @property
    def anonymous_predict_models(self) -> frozenset[str]:
        """The models open to anonymous predictions."""
        return frozenset(m.strip() for m in self.anonymous_predict.split(",") if m.strip())
