"""Turns an `Authorization` header into a `Principal`: Basic API keys or OIDC bearer tokens."""

from __future__ import annotations

import base64
import binascii

from gateway.auth.errors import AuthError
from gateway.auth.keys import KeyStore
from gateway.auth.oidc import OidcVerifier
from gateway.auth.quota import Quotas
from gateway.auth.types import Principal


class Authenticator:
    """The gateway's one place that decides who a caller is."""

    def __init__(self, keys: KeyStore, oidc: OidcVerifier | None, quotas: Quotas) -> None:
        self.keys = keys
        self.oidc = oidc
        self.quotas = quotas

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller, or `AuthError` saying what is wrong (never echoing the secret)."""
        if not authorization:
            raise AuthError("an API key (HTTP Basic `uuid:key`) or a bearer token is required")
        scheme, _, value = authorization.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            try:
                credential = base64.b64decode(value.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise AuthError("malformed Basic credential: not base64 of `uuid:key`") from exc
            return await self.keys.verify(credential)
        if scheme == "bearer":
            if self.oidc is None:
                raise AuthError("bearer tokens are not accepted here (no OIDC issuer configured)")
            return await self.oidc.verify(value.strip())
        raise AuthError("unsupported authorization scheme: use Basic or Bearer")
