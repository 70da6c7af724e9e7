"""Which routes need no credential, and which are the default namespace's alone."""

from __future__ import annotations

import re
from typing import Final

from eventbus.namespaces import DEFAULT_NAMESPACE

PUBLIC_PATHS: Final = frozenset(
    {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
    | {"/", "/v2", "/v2/", "/swagger.json", "/api"}  # DEEPaaS's index, version, spec and UI
)
#: the API pages' own assets (Swagger UI, served from the package)
PUBLIC_PREFIXES: Final = ("/static/swagger-ui",)
#: the console: its page shells and assets are public (no tenant data); its fragments are not
CONSOLE: Final = "/ui"
CONSOLE_FRAGMENTS: Final = "/ui/x"
#: catalog browsing: anonymous GET/HEAD; other methods need a key
ANONYMOUS_READ_PREFIXES: Final = ("/v1/catalog", "/v2/models")
#: platform-wide resources (every runtime, deployments): the operator's only; buckets, dead
#: letters, subscriptions, events and a function's own runtime belong to namespaces, and their
#: routes check the owner
DEFAULT_ONLY_PREFIXES: Final = (
    "/v1/runtimes",
    "/v1/deployments",
)
_PREDICT = re.compile(r"^/v2/models/([^/]+)/predict/?$")
_INVOKE = re.compile(
    r"^(/v1/functions/[^/]+/(invoke|invocations)|/api/v1/namespaces/[^/]+/actions/[^/]+(/[^/]+)?)/?$"
)
#: OSCAR's `/run` and `/job`: they also take the service's own token (`gateway/oscar`)
_SERVICE_TOKEN = re.compile(r"^/(run|job)/[^/]+/?$")
#: OpenWhisk's web actions (not built): anyone may hear that they are not supported
UNSUPPORTED_PREFIXES: Final = ("/api/v1/web",)


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in prefixes)


def is_anonymous(method: str, path: str) -> bool:
    """Whether the request may go through without a credential."""
    if path in PUBLIC_PATHS or _under(path, PUBLIC_PREFIXES + UNSUPPORTED_PREFIXES):
        return True
    if _under(path, (CONSOLE,)) and not _under(path, (CONSOLE_FRAGMENTS,)):
        return method in ("GET", "HEAD")
    if method == "POST" and _SERVICE_TOKEN.match(path):
        return True  # the route checks the service's token when no key or OIDC token is given
    return method in ("GET", "HEAD") and _under(path, ANONYMOUS_READ_PREFIXES)


def is_console_fragment(path: str) -> bool:
    """Whether ``path`` is one of the console's fragments (they need a credential)."""
    return _under(path, (CONSOLE_FRAGMENTS,))


def predicted_model(method: str, path: str) -> str | None:
    """The model a DEEPaaS predict request names (None for any other request)."""
    found = _PREDICT.match(path) if method == "POST" else None
    return found.group(1) if found else None


def allowed(namespace: str, path: str) -> bool:
    """Whether a caller of ``namespace`` may use ``path`` at all."""
    if namespace == DEFAULT_NAMESPACE:
        return True
    return not _under(path, DEFAULT_ONLY_PREFIXES)


def is_invocation(method: str, path: str) -> bool:
    """Whether the request runs a function (counted against the namespace's concurrency)."""
    return method == "POST" and bool(_INVOKE.match(path))
