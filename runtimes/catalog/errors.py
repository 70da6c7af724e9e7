"""Errors of the model catalog; the gateway maps their codes (`forbidden` is a 403)."""

from __future__ import annotations

from runtimes.errors import ModelError


class CatalogForbiddenError(ModelError):
    """The caller's namespace does not own the module it tries to change."""

    code = "forbidden"
