"""OpenWhisk activations: list (name, limit <= 200, skip, since, upto, count), get, logs, result."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from eventbus.errors import NotFoundError
from eventbus.namespaces import qualify
from gateway.openwhisk import shapes
from gateway.openwhisk.common import PREFIX, as_json, check_name, flag, resolve
from gateway.openwhisk.errors import BadRequestError
from gateway.openwhisk.refs import MEMBER_SEPARATOR
from gateway.state import state_of
from runtimes.types import ActivationRecord

router = APIRouter(prefix=PREFIX + "/activations", tags=["openwhisk"])
MAX_LIMIT = 200


async def _record(request: Request, ns: str, activation_id: str) -> ActivationRecord:
    """A finished activation of the namespace; 404 for others' alike (nothing leaks)."""
    try:
        record = await state_of(request).activations.get(activation_id)
    except NotFoundError:
        record = None
    if record is None or record.namespace != ns or not record.status.terminal:
        raise NotFoundError(
            f"activation {activation_id!r} does not exist", activation=activation_id
        )
    return record


def _function(ns: str, name: str) -> str:
    """The internal name `name=` filters on: `action`, `pkg/action`, `/ns/[pkg/]action`."""
    parts = [p for p in name.split("/") if p]
    if len(parts) == 3 or (len(parts) == 2 and parts[0] in ("_", ns)):
        if parts[0] not in ("_", ns):
            return "\x00"  # another namespace's: no record of ours has this name
        parts = parts[1:]
    if not 1 <= len(parts) <= 2:
        raise BadRequestError(f"name {name!r} is not `[package/]action`")
    local = MEMBER_SEPARATOR.join(check_name(p, "action") for p in parts)
    if len(local) > 63:
        raise BadRequestError(f"name {name!r} is too long")
    return qualify(ns, local)


@router.get("")
async def list_activations(
    request: Request,
    ns: str,
    name: str | None = None,
    limit: int = 30,
    skip: int = 0,
    since: int | None = None,
    upto: int | None = None,
    docs: str | None = None,
    count: str | None = None,
) -> Response:
    """The newest finished activations first; `count=true`: `{"activations": N}`.

    A query value that is not a number (`since=abc`) is 400, as OpenWhisk answers.
    """
    ns = resolve(request, ns)
    if not 0 <= limit <= MAX_LIMIT:
        raise BadRequestError(f"limit must be between 0 and {MAX_LIMIT}")
    if skip < 0:
        raise BadRequestError("skip must not be negative")
    for value, what in ((since, "since"), (upto, "upto")):
        if value is not None and not 0 <= value < 2**63:
            raise BadRequestError(f"{what} must be milliseconds since the epoch")
    limit = limit or MAX_LIMIT
    function = _function(ns, name) if name else None

    def wanted(record: ActivationRecord) -> bool:
        start = shapes.ms(record.start)
        return (
            record.namespace == ns
            and record.status.terminal
            and (since is None or start >= since)
            and (upto is None or start <= upto)
        )

    state = state_of(request)
    if flag(count):
        every = await state.activations.recent(limit=10**9, function=function, where=wanted)
        return as_json({"activations": len(every)})
    found = await state.activations.recent(limit=skip + limit, function=function, where=wanted)
    return as_json(
        [
            shapes.activation(r, state.cache.specs.get(r.function), with_logs=flag(docs))
            for r in found[skip:]
        ]
    )


@router.get("/{activation_id}")
async def get_activation(request: Request, ns: str, activation_id: str) -> Response:
    """One activation record."""
    record = await _record(request, resolve(request, ns), activation_id)
    return as_json(shapes.activation(record, state_of(request).cache.specs.get(record.function)))


@router.get("/{activation_id}/logs")
async def get_logs(request: Request, ns: str, activation_id: str) -> Response:
    """`{"logs": [...]}`."""
    record = await _record(request, resolve(request, ns), activation_id)
    return as_json({"logs": record.logs})


@router.get("/{activation_id}/result")
async def get_result(request: Request, ns: str, activation_id: str) -> Response:
    """The activation's `response`: status, statusCode, success, result."""
    record = await _record(request, resolve(request, ns), activation_id)
    return as_json(shapes.response_of(record))
