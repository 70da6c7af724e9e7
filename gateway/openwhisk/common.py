"""What every OpenWhisk route shares: the namespace in the path, names, stores, answers."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request, Response

from eventbus.namespaces import is_name, qualify
from eventbus.triggers import Trigger, TriggerStore
from gateway.auth import ForbiddenError
from gateway.auth.access import namespace
from gateway.openwhisk.errors import BadRequestError
from gateway.openwhisk.store import OpenWhiskStore
from gateway.openwhisk.types import FIRED_TYPE_SUFFIX
from gateway.state import state_of

PREFIX = "/api/v1/namespaces/{ns}"
ACTIVATION_HEADER = "x-openwhisk-activation-id"
NAME_RULES = "lower-case letters, digits, '_' and '-', starting with a letter or digit, <= 63"


def resolve(request: Request, ns: str) -> str:
    """The namespace the path names: `_` is the caller's; any other but its own is refused."""
    own = namespace(request)
    if ns in ("_", own):
        return own
    raise ForbiddenError(f"the supplied authentication is not authorized to access {ns!r}")


def check_name(name: str, what: str) -> str:
    """``name`` when it is a valid entity name, else 400."""
    if not is_name(name):
        raise BadRequestError(f"the {what} name {name!r} is invalid: use {NAME_RULES}")
    return name


def entity(ref: str, ns: str, what: str) -> str:
    """The bare name in a reference `name`, `ns/name` or `/ns/name` (403 for another ns)."""
    parts = [p for p in ref.strip("/").split("/") if p]
    if not parts or len(parts) > 2:
        raise BadRequestError(f"the {what} {ref!r} is not `name` or `/namespace/name`")
    if len(parts) == 2 and parts[0] not in ("_", ns):
        raise ForbiddenError(f"the {what} {ref!r} lies in another namespace")
    return check_name(parts[-1], what)


def qualified(ns: str, name: str, what: str) -> str:
    """The internal name of a checked entity name."""
    return qualify(ns, check_name(name, what))


def ow_store(request: Request) -> OpenWhiskStore:
    """The OpenWhisk-only documents (one store per app)."""
    app_state = request.app.state
    if getattr(app_state, "openwhisk", None) is None:
        app_state.openwhisk = OpenWhiskStore(state_of(request).bus)
    store: OpenWhiskStore = app_state.openwhisk
    return store


def triggers(request: Request) -> TriggerStore:
    """The native trigger store (where rules live)."""
    return TriggerStore(state_of(request).bus)


def fired_type(request: Request) -> str:
    """The event type of a trigger fire."""
    return state_of(request).bus.event_type(FIRED_TYPE_SUFFIX)


def rule_trigger(native: Trigger, fired: str) -> str | None:
    """The internal name of the OpenWhisk trigger a native trigger's rule follows, if it is one."""
    if native.event_types != [fired] or len(native.filters) != 1:
        return None
    exact = native.filters[0].get("exact")
    if not isinstance(exact, dict) or set(exact) != {"subject"}:
        return None
    subject = exact["subject"]
    return subject if isinstance(subject, str) else None


def as_json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response."""
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def flag(value: str | None) -> bool:
    """OpenWhisk's boolean query parameters (`true`/`false`)."""
    return (value or "").strip().lower() in ("true", "1", "yes")
