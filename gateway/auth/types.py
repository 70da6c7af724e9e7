"""Contracts of auth: the caller, and API keys as stored (hashed) and as listed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, Field

from eventbus.namespaces import NAMESPACE_PATTERN


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: its namespace, who it is, and how it proved it."""

    namespace: str
    subject: str
    method: str  # "basic" (API key) or "bearer" (OIDC token)


class KeyInfo(BaseModel):
    """An API key as listed: never its secret."""

    uuid: str
    namespace: str = Field(pattern=NAMESPACE_PATTERN)
    description: str = ""
    created: datetime
    revoked: datetime | None = None


class ApiKey(KeyInfo):
    """An API key as stored in the `auth_keys` KV bucket: a salted HMAC-SHA256 of the secret."""

    salt: str
    digest: str
