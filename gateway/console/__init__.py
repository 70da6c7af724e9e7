"""The web console (`/ui`): server-rendered pages with htmx, over the gateway's own services."""

from gateway.console.routes import ROUTERS

__all__ = ["ROUTERS"]
