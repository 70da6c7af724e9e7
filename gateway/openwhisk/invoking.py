"""Running an action, by an HTTP invoke or by a rule: parameters, then a function or a sequence.

Parameters merge as OpenWhisk merges them: the package's (a binding's over its bound
package's) < the action's < the invocation's (an HTTP body, or a fire's payload over the
trigger's parameters).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from fastapi import Request, Response

from gateway.openwhisk import shapes
from gateway.openwhisk.common import ACTIVATION_HEADER, as_json
from gateway.openwhisk.errors import BadRequestError, TooLargeError
from gateway.openwhisk.refs import ActionRef, load_action, params_of
from gateway.openwhisk.sequences import start_sequence
from gateway.state import state_of
from runtimes.activations import new_activation_id
from runtimes.types import ActivationRecord, ActivationStatus, FunctionSpec

JSON = "application/json"
log = logging.getLogger(__name__)


def parameters(raw: bytes, what: str = "parameters") -> dict[str, Any]:
    """A JSON-object body (empty: `{}`); 400 otherwise."""
    try:
        args = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"the {what} are not valid JSON: {exc}") from exc
    if not isinstance(args, dict):
        raise BadRequestError(f"the {what} must be a JSON object")
    return args


async def invoke(
    request: Request,
    ref: ActionRef,
    args: dict[str, Any],
    *,
    blocking: bool,
    result_only: bool,
    timeout: int | None,
) -> Response:
    """Invoke: 202 `{activationId}` unless blocking; blocking past its wait answers 202 too."""
    state = state_of(request)
    spec, meta = await load_action(request, ref)
    params = ref.inherited | params_of(meta) | args
    if blocking and timeout is not None and timeout <= 0:
        raise BadRequestError("timeout must be a positive number of milliseconds")
    wait = min((timeout or 60_000) / 1000, state.settings.sync_wait_s)
    if spec is None:
        activation_id = new_activation_id()
        task = await start_sequence(request, ref, meta, params, activation_id)
        state.metrics.accepted.labels(ref.qname, "sync" if blocking else "async").inc()
        if not blocking or task is None:
            return _accepted(activation_id)
        try:
            record: ActivationRecord = await asyncio.wait_for(asyncio.shield(task), wait)
        except TimeoutError:
            return _accepted(activation_id)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this request is cancelled (the server stops), not the sequence's run
            return _accepted(activation_id)  # taken over by another gateway, which ends it
        except Exception as exc:  # its hold stays: the sequence is resumed, its record tells
            log.warning("sequence %s: this gateway's run stopped: %s", activation_id, exc)
            return _accepted(activation_id)
        return _answer(request, record, None, result_only)
    body = orjson.dumps(params)
    if not blocking:
        activation_id = await state.invoker.invoke_async(spec, body, content_type=JSON)
        state.metrics.accepted.labels(ref.qname, "async").inc()
        return _accepted(activation_id)
    outcome = await state.invoker.invoke_sync(spec, body, content_type=JSON, wait=wait)
    state.metrics.accepted.labels(ref.qname, "sync").inc()
    if outcome.record is None:
        return _accepted(outcome.activation_id)
    return _answer(request, outcome.record, spec, result_only)


async def run_for_rule(
    request: Request, ref: ActionRef, payload: dict[str, Any], activation_id: str, cause: str
) -> None:
    """Start the action a rule names (async), under a given activation id."""
    state = state_of(request)
    spec, meta = await load_action(request, ref)
    params = ref.inherited | params_of(meta) | payload
    if spec is None:
        await start_sequence(request, ref, meta, params, activation_id, cause=cause)
        return
    await state.invoker.invoke_async(
        spec, orjson.dumps(params), content_type=JSON, cause=cause, activation_id=activation_id
    )
    state.metrics.accepted.labels(ref.qname, "async").inc()


def _accepted(activation_id: str) -> Response:
    return as_json({"activationId": activation_id}, 202, {ACTIVATION_HEADER: activation_id})


def _answer(
    request: Request, record: ActivationRecord, spec: FunctionSpec | None, result_only: bool
) -> Response:
    limit = state_of(request).settings.max_result_bytes
    if len(orjson.dumps(record.result)) > limit:
        raise TooLargeError(f"the result is over the {limit}-byte limit", activation_id=record.id)
    doc = shapes.activation(record, spec)
    answer = doc["response"]["result"] if result_only else doc
    status = 200 if record.status is ActivationStatus.SUCCESS else 502
    return as_json(answer, status, {ACTIVATION_HEADER: record.id})
