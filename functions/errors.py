"""Errors the built-in functions raise: the executor reads their code."""

from __future__ import annotations

from eventbus.errors import DeepfaasError


class FunctionError(DeepfaasError):
    """Root of the built-in functions' own errors (retried like any failure)."""

    code = "function"


class InvalidInputError(FunctionError):
    """The input cannot succeed (unreadable, wrong kind): the activation is `invalid` at once."""

    code = "invalid"
