"""DEEPaaS's entry points beside ours: `GET /` (versions), `GET /v2/` and `/swagger.json`.

DEEPaaS clients start from `/`, follow the `v2` version's links, and read `/swagger.json`
(Swagger 2.0) to build their forms; `/api` (Swagger UI over it) is in `gateway.routes.docs`.
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from gateway.deepaas.errors import DeepaasRoute
from gateway.deepaas.swagger2 import swagger2

router = APIRouter(tags=["deepaas"], route_class=DeepaasRoute)
#: the paths `/swagger.json` describes: DEEPaaS's own
DEEPAAS_PATHS: Final = ("/", "/v2")


class Link(BaseModel):
    """A DEEPaaS link, with its media type."""

    rel: str
    type: str
    href: str


class Version(BaseModel):
    """One API version as DEEPaaS lists it."""

    version: str
    id: str
    links: list[Link]


class Versions(BaseModel):
    """`GET /`: the versions, and where the API's description and UI are."""

    versions: list[Version]
    links: list[Link]


V2: Final = Version(
    version="stable",
    id="v2",
    links=[Link(rel="self", type="application/json", href="/v2/")],
)


@router.get("/", response_model=Versions, summary="The API versions (DEEPaaS)")
async def versions() -> Versions:
    """The API versions, as DEEPaaS answers `GET /`."""
    return Versions(
        versions=[V2],
        links=[
            Link(rel="help", type="text/html", href="/api"),
            Link(rel="describedby", type="application/json", href="/swagger.json"),
        ],
    )


@router.get("/v2/", response_model=Version, summary="The v2 API (DEEPaaS)")
@router.get("/v2", include_in_schema=False)
async def version_v2() -> Version:
    """The `v2` version, as DEEPaaS answers `GET /v2/`."""
    return V2


@router.get("/swagger.json", include_in_schema=False)
async def swagger_json(request: Request) -> JSONResponse:
    """The DEEPaaS routes as Swagger 2.0, the document DEEPaaS clients read."""
    docs = str(request.url_for("docs"))
    document: dict[str, Any] = swagger2(request.app.openapi(), wanted=DEEPAAS_PATHS, docs_url=docs)
    return JSONResponse(document)
