"""Who is calling: API keys (HTTP Basic `uuid:key`), OIDC bearer tokens, namespaces."""

from gateway.auth.errors import AuthError, ForbiddenError, TooManyRequestsError
from gateway.auth.types import ApiKey, KeyInfo, Principal

__all__ = ["ApiKey", "AuthError", "ForbiddenError", "KeyInfo", "Principal", "TooManyRequestsError"]
