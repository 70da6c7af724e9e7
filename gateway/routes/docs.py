"""The API pages, offline: Swagger UI for `/docs` (OpenAPI 3.1) and DEEPaaS's `/api` page.

Swagger UI's assets are served from the package (`gateway/static/swagger-ui`, put there by
`make assets` from the npm package `swagger-ui-dist`), never from a CDN: research clusters are
often offline, and a page that loads its script from the internet is blank there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import APIRouter, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse

ASSETS: Final = Path(__file__).resolve().parent.parent / "static" / "swagger-ui"
ASSETS_URL: Final = "/static/swagger-ui"
OAUTH2_REDIRECT: Final = "/docs/oauth2-redirect"
#: the files the pages use, and their media types (nothing else under ASSETS is served)
FILES: Final = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}

router = APIRouter(include_in_schema=False)


def swagger_page(title: str, spec_url: str) -> HTMLResponse:
    """A Swagger UI page for ``spec_url`` that loads nothing from outside the gateway."""
    page = get_swagger_ui_html(
        openapi_url=spec_url,
        title=title,
        swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_URL}/favicon-32x32.png",
        oauth2_redirect_url=OAUTH2_REDIRECT,
        swagger_ui_parameters={"validatorUrl": None},  # never ask the online validator
    )
    if not (ASSETS / "swagger-ui-bundle.js").is_file():
        note = (
            "<p>Swagger UI's assets are not installed in this gateway: run <code>make assets"
            f"</code>. The API description itself is at <a href='{spec_url}'>{spec_url}</a>.</p>"
        )
        page = HTMLResponse(bytes(page.body).decode().replace("<body>", f"<body>{note}", 1))
    return page


@router.get("/docs")
async def docs() -> HTMLResponse:
    """The whole API (OpenAPI 3.1), interactive."""
    return swagger_page("deepfaas API", "/openapi.json")


@router.get("/api")
async def deepaas_api() -> HTMLResponse:
    """The DEEPaaS-compatible API as DEEPaaS shows it: Swagger UI over `/swagger.json`."""
    return swagger_page("deepfaas: DEEPaaS API", "/swagger.json")


@router.get(OAUTH2_REDIRECT)
async def oauth2_redirect() -> HTMLResponse:
    """Where an OAuth2 sign-in from the docs page returns."""
    return get_swagger_ui_oauth2_redirect_html()


@router.get(f"{ASSETS_URL}/{{name}}")
async def asset(name: str) -> FileResponse:
    """One of Swagger UI's files, from the package."""
    path = ASSETS / name
    if name not in FILES or not path.is_file():
        raise HTTPException(404, f"no asset {name!r} (run `make assets` to install Swagger UI)")
    return FileResponse(
        path, media_type=FILES[name], headers={"cache-control": "public, max-age=86400"}
    )
