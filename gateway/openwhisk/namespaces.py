"""OpenWhisk namespaces: a caller sees its own."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from gateway.auth.access import namespace
from gateway.openwhisk.common import as_json

router = APIRouter(prefix="/api/v1/namespaces", tags=["openwhisk"])


@router.get("")
async def list_namespaces(request: Request) -> Response:
    """The caller's namespace (OpenWhisk lists those the key may use)."""
    return as_json([namespace(request)])
