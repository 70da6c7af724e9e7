"""The console's page shells (public, no tenant data), its assets, and its fragment routers."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import FileResponse, RedirectResponse

from gateway.auth.access import caller
from gateway.console import activations, functions, models, operations, storage, triggers
from gateway.console.render import FRAGMENTS, HERE, TEMPLATES, fragment

STATIC: Final = HERE / "static"
#: the pages: path segment -> title, in the order of the navigation
PAGES: Final = {
    "functions": "Functions",
    "activations": "Activations",
    "events": "Events",
    "storage": "Storage",
    "triggers": "Triggers",
    "dlq": "Dead letters",
    "models": "Models",
    "runtimes": "Runtimes",
    "rates": "Rates",
}
MEDIA: Final = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
#: scripts and styles only from the gateway; nothing inline runs (htmx's eval is off too)
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' blob: data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)

pages = APIRouter(prefix="/ui", include_in_schema=False)


@pages.get("")
@pages.get("/")
async def index() -> RedirectResponse:
    """The console opens on its functions page."""
    return RedirectResponse("/ui/functions", status_code=307)


@pages.get("/static/{name:path}")
async def asset(name: str) -> FileResponse:
    """The console's own CSS and JS, and htmx and uPlot from `make assets`."""
    path = (STATIC / name).resolve()
    if not path.is_relative_to(STATIC) or path.suffix not in MEDIA or not path.is_file():
        hint = " (run `make assets` for htmx and uPlot)" if name.startswith("vendor/") else ""
        raise HTTPException(404, f"no console asset {name!r}{hint}")
    return FileResponse(
        path, media_type=MEDIA[path.suffix], headers={"cache-control": "public, max-age=3600"}
    )


@pages.get("/{page}")
async def shell(request: Request, page: str) -> Response:
    """A page's shell: navigation and empty places that its fragments fill once signed in."""
    if page not in PAGES:
        raise HTTPException(404, f"the console has no page {page!r}")
    vendored = (STATIC / "vendor" / "htmx.min.js").is_file()
    response = TEMPLATES.TemplateResponse(
        request, f"page_{page}.html", {"pages": PAGES, "page": page, "vendored": vendored}
    )
    response.headers["content-security-policy"] = CSP
    response.headers["cache-control"] = "no-store"
    return response


whoami = APIRouter(prefix=FRAGMENTS, include_in_schema=False)


@whoami.get("/whoami")
async def signed_in(request: Request) -> Response:
    """Who the credential names: its namespace and how it proved it."""
    return fragment(request, "whoami.html", principal=caller(request))


ROUTERS: Final = (
    whoami,
    functions.router,
    activations.router,
    storage.router,
    triggers.router,
    operations.router,
    models.router,
    pages,
)
