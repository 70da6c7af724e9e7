"""Health, readiness, Prometheus metrics and dead letters."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from eventbus.dlq import DeadLetter, delete_dead_letter, get_dead_letter, list_dead_letters
from eventbus.errors import NotFoundError
from eventbus.invocations import enqueue, new_invocation
from eventbus.namespaces import DEFAULT_NAMESPACE, SEPARATOR
from eventbus.types import EVENTS_STREAM, INVOCATIONS_STREAM
from gateway.auth.access import namespace
from gateway.auth.types import Principal
from gateway.bodies import Accepted
from gateway.params import StreamSeq
from gateway.state import state_of
from runtimes.activations import new_activation_id

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request, response: Response) -> dict[str, object]:
    """Ready when NATS is connected and the streams answer."""
    state = state_of(request)
    checks: dict[str, object] = {"nats": state.bus.connected}
    try:
        await state.bus.js.stream_info(INVOCATIONS_STREAM)
        await state.bus.js.stream_info(EVENTS_STREAM)
        checks["jetstream"] = True
    except Exception as exc:
        checks["jetstream"] = False
        checks["error"] = str(exc) or type(exc).__name__
    ok = bool(checks["nats"]) and bool(checks["jetstream"])
    if not ok:
        response.status_code = 503
    return {"status": "ok" if ok else "unavailable", **checks}


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus exposition format: anonymous, aggregates only (no function or trigger
    names); with a key, its namespace's series per function and trigger."""
    state = state_of(request)
    principal: Principal | None = getattr(request.state, "principal", None)
    namespace = principal.namespace if principal is not None else None
    text = await state.metrics.render(state.bus, sorted(state.cache.specs), namespace)
    return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")


def visible_to(request: Request) -> str | None:
    """Whose dead letters the caller sees: its namespace's (None: the operator sees all)."""
    ns = namespace(request)
    return None if ns == DEFAULT_NAMESPACE else ns


async def own_letter(request: Request, seq: int) -> DeadLetter:
    """Dead letter ``seq`` if the caller may see it (another namespace's is a 404)."""
    return await get_dead_letter(state_of(request).bus, seq, namespace=visible_to(request))


@router.get("/v1/dlq", response_model=list[DeadLetter], tags=["dead letters"])
async def list_dlq(
    request: Request,
    function: Annotated[
        str | None, Query(max_length=300, description="only this function's (or subscription's)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[DeadLetter]:
    """Dead letters of the caller's namespace (the default namespace: all), newest first."""
    ns = namespace(request)
    # the target as stored (any string: a name that cannot exist has no letters)
    target = (
        function if function is None or ns == DEFAULT_NAMESPACE else f"{ns}{SEPARATOR}{function}"
    )
    return await list_dead_letters(
        state_of(request).bus, limit=limit, target=target, namespace=visible_to(request)
    )


@router.get("/v1/dlq/{seq}", response_model=DeadLetter, tags=["dead letters"])
async def get_dlq(request: Request, seq: StreamSeq) -> DeadLetter:
    """One dead letter with its error, traceback and original event."""
    return await own_letter(request, seq)


@router.post(
    "/v1/dlq/{seq}/replay", status_code=202, response_model=Accepted, tags=["dead letters"]
)
async def replay_dlq(request: Request, seq: StreamSeq) -> Accepted:
    """Queue the dead letter's invocation again, as a new activation; the letter is removed."""
    state = state_of(request)
    letter = await own_letter(request, seq)
    if letter.kind not in ("invoke", "dispatch"):
        raise NotFoundError(f"dead letter {seq} is not an invocation", seq=seq)
    state.cache.get(letter.target)
    original = letter.cloud_event()
    invocation = new_invocation(
        state.bus,
        letter.target,
        original.data or b"",
        source="/gateway/replay",
        activation_id=new_activation_id(),
        content_type=original.datacontenttype or "application/json",
        mode="async",
        callback=str(original.extensions["callback"])
        if "callback" in original.extensions
        else None,
        cause=str(original.extensions["causeid"]) if "causeid" in original.extensions else None,
        extra={"replayof": letter.activation_id or original.id},
    )
    await enqueue(state.bus, invocation)
    await delete_dead_letter(state.bus, seq)
    location = f"/v1/activations/{invocation.id}"
    return Accepted(activation_id=invocation.id, location=location)


@router.delete("/v1/dlq/{seq}", status_code=204, tags=["dead letters"])
async def delete_dlq(request: Request, seq: StreamSeq) -> Response:
    """Discard a dead letter (404 when there is none at ``seq``)."""
    # JetStream answers a delete past the stream's end with a store error, not "not found"
    await own_letter(request, seq)
    await delete_dead_letter(state_of(request).bus, seq)
    return Response(status_code=204)
