"""/v1/auth/keys: API keys; the default namespace manages every namespace, others their own."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from eventbus.errors import ConflictError, NotFoundError
from eventbus.namespaces import DEFAULT_NAMESPACE, NAMESPACE_PATTERN
from gateway.auth import ForbiddenError, KeyInfo
from gateway.auth.access import namespace
from gateway.auth.keys import KeyStore
from gateway.params import KeyId
from gateway.state import state_of

router = APIRouter(prefix="/v1/auth/keys", tags=["auth"])


class KeyIn(BaseModel):
    """A key to create."""

    model_config = ConfigDict(extra="forbid")

    namespace: str | None = Field(default=None, pattern=NAMESPACE_PATTERN)
    description: str = Field(default="", max_length=200)


class NewKey(KeyInfo):
    """A new key with its credential, shown this once."""

    key: str = Field(description="`uuid:key`, for HTTP Basic auth")


def _store(request: Request) -> KeyStore:
    keys: KeyStore = request.app.state.auth.keys
    return keys


def _may_manage(request: Request, target: str) -> None:
    own = namespace(request)
    if own not in (DEFAULT_NAMESPACE, target):
        raise ForbiddenError(f"namespace {own!r} may not manage keys of {target!r}")


@router.get("", response_model=list[KeyInfo])
async def list_keys(
    request: Request, ns: Annotated[str | None, Query(alias="namespace")] = None
) -> list[KeyInfo]:
    """Keys (never their secrets); a namespace other than default sees its own."""
    own = namespace(request)
    target = ns if own == DEFAULT_NAMESPACE else own
    return await _store(request).list(target)


@router.post("", status_code=201, response_model=NewKey)
async def create_key(request: Request, body: KeyIn) -> NewKey:
    """A new key for a namespace (the caller's by default)."""
    target = body.namespace or namespace(request)
    _may_manage(request, target)
    if not state_of(request).settings.sandbox:
        others = await _store(request).namespaces() - {target}
        if others:
            raise ConflictError(
                "the sandbox is off (DEEPFAAS_SANDBOX=off, a single-user mode): keys of a "
                f"second namespace are refused while {sorted(others)} have keys",
                namespace=target,
            )
    info, credential = await _store(request).create(target, body.description)
    return NewKey(**info.model_dump(), key=credential)


@router.delete("/{key_id}", response_model=KeyInfo)
async def revoke_key(request: Request, key_id: KeyId) -> KeyInfo:
    """Revoke a key: it is refused from the next request on."""
    store = _store(request)
    found = await store.get(key_id)
    try:
        _may_manage(request, found.namespace)
    except ForbiddenError:
        raise NotFoundError(f"key {key_id!r} does not exist", key=key_id) from None
    return await store.revoke(key_id)
