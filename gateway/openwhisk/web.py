"""`/api/v1/web/...`: web actions are not built; every call answers so, clearly (404)."""

from __future__ import annotations

from fastapi import APIRouter

from eventbus.errors import NotFoundError
from gateway.openwhisk.action_specs import WEB_UNSUPPORTED

router = APIRouter(prefix="/api/v1/web", tags=["openwhisk"])


@router.api_route(
    "/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False
)
async def web_action(path: str) -> None:
    """Web actions are not supported: say so, whatever the path."""
    raise NotFoundError(WEB_UNSUPPORTED, path=path)
