"""What route handlers ask of auth: the caller and its namespace."""

from __future__ import annotations

from fastapi import Request

from eventbus.namespaces import qualify
from gateway.auth.errors import AuthError
from gateway.auth.types import Principal


def caller(request: Request) -> Principal:
    """The authenticated caller of ``request`` (`AuthError` when anonymous)."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        raise AuthError("this route needs an API key or a bearer token")
    return principal


def namespace(request: Request) -> str:
    """The caller's namespace."""
    return caller(request).namespace


def qualified(request: Request, name: str) -> str:
    """The internal name of the caller's object ``name``."""
    return qualify(namespace(request), name)
