"""OpenID Connect bearer tokens: signature against the issuer's JWKS, expiry, issuer, audience.

The namespace comes from one configured claim. Keys come from a JWKS URL (fetched and cached
by PyJWT's `PyJWKClient`, in a thread so the event loop never blocks) or a JWKS file.
"""

from __future__ import annotations

import asyncio
from typing import Any

import jwt
import orjson

from eventbus.namespaces import is_name
from gateway.auth.errors import AuthError
from gateway.auth.settings import AuthSettings
from gateway.auth.types import Principal


class OidcVerifier:
    """Checks bearer tokens of one issuer."""

    def __init__(self, settings: AuthSettings) -> None:
        if not settings.oidc_issuer or not settings.oidc_audience:
            raise ValueError("OIDC needs both an issuer and an audience")
        self.issuer = settings.oidc_issuer
        self.audience = settings.oidc_audience
        self.claim = settings.oidc_namespace_claim
        self.algorithms = [a.strip() for a in settings.oidc_algorithms.split(",") if a.strip()]
        self._client = (
            jwt.PyJWKClient(settings.oidc_jwks_url, cache_keys=True, lifespan=300, timeout=5)
            if settings.oidc_jwks_url
            else None
        )
        self._keys: jwt.PyJWKSet | None = None
        if settings.oidc_jwks_file is not None:
            self._keys = jwt.PyJWKSet.from_dict(orjson.loads(settings.oidc_jwks_file.read_bytes()))
        if self._client is None and self._keys is None:
            raise ValueError("OIDC needs a JWKS URL or file")

    async def verify(self, token: str) -> Principal:
        """The caller of a bearer token; `AuthError` when anything about it is wrong."""
        try:
            key = await self._signing_key(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("the bearer token has expired") from exc
        except (jwt.PyJWTError, ValueError, KeyError) as exc:
            raise AuthError(f"the bearer token is not accepted: {exc}") from exc
        namespace = claims.get(self.claim)
        if not isinstance(namespace, str) or not is_name(namespace):
            raise AuthError(f"the token's {self.claim!r} claim names no valid namespace")
        return Principal(namespace=namespace, subject=str(claims.get("sub", "")), method="bearer")

    async def _signing_key(self, token: str) -> Any:
        if self._client is not None:
            client = self._client
            found = await asyncio.to_thread(client.get_signing_key_from_jwt, token)
            return found.key
        assert self._keys is not None
        kid = jwt.get_unverified_header(token).get("kid")
        for candidate in self._keys.keys:
            if kid is None or candidate.key_id == kid:
                return candidate.key
        raise AuthError("no signing key matches the token's `kid`")
