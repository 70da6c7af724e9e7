"""Errors of authentication and authorisation; `gateway.problems` maps their codes."""

from __future__ import annotations

from eventbus.errors import DeepfaasError


class AuthError(DeepfaasError):
    """No credential, a malformed one, or one we do not accept (401)."""

    code = "unauthorized"


class ForbiddenError(DeepfaasError):
    """The caller is known but may not touch this namespace or resource (403)."""

    code = "forbidden"


class TooManyRequestsError(DeepfaasError):
    """The namespace is over its rate or concurrency limit (429)."""

    code = "too_many_requests"
