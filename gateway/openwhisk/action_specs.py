"""An action body as OpenWhisk sends it, checked and turned into a function spec or a sequence."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from pydantic import ValidationError

from eventbus.errors import NotFoundError
from gateway.auth.settings import AuthSettings
from gateway.openwhisk import shapes
from gateway.openwhisk.errors import BadRequestError, TooLargeError
from gateway.openwhisk.refs import SEQUENCE_KIND, ActionRef, load_action, parse_ref
from gateway.openwhisk.types import SUPPORTED_KINDS, ActionIn
from runtimes.types import MAX_CODE_BYTES, FunctionSpec
from runtimes.worker.loader import check_syntax

_MANAGED = {"version", "created", "updated"}
WEB_UNSUPPORTED = (
    "web actions are not supported by deepfaas: invoke the action with "
    "POST /api/v1/namespaces/{ns}/actions/{name} and a key"
)


def refuse_web(body: ActionIn) -> None:
    """400 for a `web-export` (web actions are not built)."""
    for note in body.annotations:
        if note.key in ("web-export", "raw-http", "web-custom-options") and note.value:
            raise BadRequestError(WEB_UNSUPPORTED)


def function_spec(
    body: ActionIn, qname: str, current: FunctionSpec | None, bounds: AuthSettings
) -> FunctionSpec:
    """The function an action body describes (over ``current`` for an update)."""
    data: dict[str, Any] = current.model_dump(exclude=_MANAGED) if current else {"name": qname}
    if body.exec is None and current is None:
        raise BadRequestError("exec is required: {kind: python:3, code: ...}")
    if body.exec is not None:
        kind = body.exec.kind
        if kind not in SUPPORTED_KINDS:
            raise BadRequestError(
                f"exec.kind {kind!r} is not supported; supported kinds: "
                + ", ".join((*SUPPORTED_KINDS, SEQUENCE_KIND))
            )
        if body.exec.binary:
            raise BadRequestError("binary (zip) actions are not supported: send inline `code`")
        if body.exec.code is None and not (body.exec.main and ":" in body.exec.main):
            raise BadRequestError("exec.code is required (Python defining `main(args)`)")
        if body.exec.code is not None and len(body.exec.code.encode()) > MAX_CODE_BYTES:
            raise TooLargeError(f"the code is over the {MAX_CODE_BYTES}-byte limit")
        data.update(code=body.exec.code, handler=body.exec.main or "main")
    limits = body.limits
    if limits.timeout is not None:
        low, high = int(bounds.action_timeout_min_s * 1000), int(bounds.action_timeout_max_s * 1000)
        if not low <= limits.timeout <= high:
            raise BadRequestError(f"limits.timeout {limits.timeout} ms is outside {low}..{high} ms")
        data["timeout_s"] = limits.timeout / 1000
    if limits.memory is not None:
        if not 64 <= limits.memory <= 262_144:
            raise BadRequestError(f"limits.memory {limits.memory} MB is outside 64..262144 MB")
        data["memory_mb"] = limits.memory
    if limits.concurrency is not None:
        if not 1 <= limits.concurrency <= 1000:
            raise BadRequestError(f"limits.concurrency {limits.concurrency} is outside 1..1000")
        data["concurrency"] = limits.concurrency
    try:
        spec = FunctionSpec.model_validate(data)
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise BadRequestError(f"invalid action: {detail}") from exc
    syntax = check_syntax(spec)
    if syntax is not None:
        raise BadRequestError(f"the action's code has a syntax error at {syntax}")
    return spec


async def sequence_meta(
    request: Request, ref: ActionRef, body: ActionIn, version: int
) -> dict[str, Any]:
    """The document of a sequence: its components, each an existing action of the namespace."""
    assert body.exec is not None
    components = body.exec.components
    if not components or not all(isinstance(c, str) for c in components):
        raise BadRequestError("a sequence needs exec.components: ['/ns/action', ...]")
    if len(components) > 50:
        raise BadRequestError("a sequence has at most 50 components")
    paths = []
    for component in components:
        target = await parse_ref(request, ref.ns, component, "sequence component")
        try:
            await load_action(request, target)
        except NotFoundError as exc:
            raise BadRequestError(f"sequence component {component!r} does not exist") from exc
        if target.qname == ref.qname:
            raise BadRequestError("a sequence cannot contain itself")
        paths.append(target.path)
    return {
        "kind": SEQUENCE_KIND,
        "components": paths,
        "version": version,
        "updated": shapes.ms(datetime.now(UTC)),
    }
