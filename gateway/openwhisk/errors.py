"""Errors of the OpenWhisk API; `gateway.problems` maps their codes."""

from __future__ import annotations

from eventbus.errors import DeepfaasError


class BadRequestError(DeepfaasError):
    """Input OpenWhisk answers with 400 (bad names, unknown kinds, limits out of bounds)."""

    code = "bad_request"


class TooLargeError(DeepfaasError):
    """A payload or result over its limit (413)."""

    code = "too_large"


class SequenceError(DeepfaasError):
    """A sequence that could not go on (nested too deep, a component that never finished)."""

    code = "bad_request"
