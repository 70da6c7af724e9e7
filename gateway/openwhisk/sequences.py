"""Sequences, run by the gateway: each component an ordinary activation, in order.

A sequence is an OpenWhisk document only (no function, no worker). Running one: the gateway
writes the sequence's record as `running`, then invokes each component through the invoker
(sync, with a wait of the component's own timeout) under an activation id derived from the
sequence's id and the component's index, with `cause` = the sequence's id; the result of each
(over the component's default parameters) is the next one's input. The first failure ends it.
The final record (result = the last result, logs = the component activation ids) is written
once and announced as a worker announces its own (`activation.completed|failed`). Components
are durable, exactly-once activations like any other; the orchestration itself lives in the
gateway process that started it (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import Request

from eventbus.errors import DeepfaasError
from gateway.openwhisk.errors import SequenceError
from gateway.openwhisk.refs import ActionRef, load_action, params_of, parse_ref
from gateway.state import GatewayState, state_of
from runtimes.types import ActivationRecord, ActivationStatus
from runtimes.worker.results import emit_completion

log = logging.getLogger(__name__)
MAX_DEPTH = 8
#: time a component may take beyond its own timeout (queueing, a cold start)
SLACK_S = 30.0
_TASKS: set[asyncio.Task[ActivationRecord]] = set()


def component_id(sequence_id: str, index: int) -> str:
    """The activation id of a sequence's ``index``-th component (the same on every retry)."""
    return hashlib.sha256(f"{sequence_id}/{index}".encode()).hexdigest()[:32]


def start_sequence(
    request: Request,
    ref: ActionRef,
    meta: dict[str, Any],
    params: dict[str, Any],
    activation_id: str,
    cause: str | None = None,
) -> asyncio.Task[ActivationRecord]:
    """Run the sequence in the background; the task's result is its final record."""
    task = asyncio.create_task(run_sequence(request, ref, meta, params, activation_id, cause))
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
    return task


async def run_sequence(
    request: Request,
    ref: ActionRef,
    meta: dict[str, Any],
    params: dict[str, Any],
    activation_id: str,
    cause: str | None = None,
    depth: int = 0,
) -> ActivationRecord:
    """Run every component in order; write and return the sequence's record."""
    state = state_of(request)
    start = datetime.now(UTC)
    record = ActivationRecord(
        id=activation_id,
        function=ref.qname,
        version=int(meta.get("version", 1)),
        status=ActivationStatus.RUNNING,
        mode="sequence",
        accepted=start,
        start=start,
        cause=cause,
        annotations={"openwhisk_name": ref.name, "openwhisk_path": ref.path.lstrip("/")},
    )
    await state.activations.put(record)
    value, ids = params, []
    status, error = ActivationStatus.SUCCESS, None
    for index, path in enumerate(meta.get("components", [])):
        own = component_id(activation_id, index)
        ids.append(own)
        try:
            done = await _component(request, state, path, ref.ns, value, own, activation_id, depth)
        except DeepfaasError as exc:
            status, error = ActivationStatus.ERROR, f"component {path}: {exc.message}"
            break
        except Exception as exc:  # an orchestration must always end with a record
            log.exception("sequence %s: component %s failed", activation_id, path)
            status, error = ActivationStatus.ERROR, f"component {path}: {type(exc).__name__}"
            break
        if done.status is not ActivationStatus.SUCCESS:
            status, error = done.status, done.error or f"component {path} failed"
            break
        value = done.result if isinstance(done.result, dict) else {"result": done.result}
    end = datetime.now(UTC)
    final = record.model_copy(
        update={
            "status": status,
            "end": end,
            "duration_ms": round((end - start).total_seconds() * 1000, 3),
            "result": value if status is ActivationStatus.SUCCESS else None,
            "error": error,
            "logs": ids,
        }
    )
    await state.activations.put(final)
    await emit_completion(state.bus, final)  # `activation.completed|failed`, as a worker's
    return final


async def _component(
    request: Request,
    state: GatewayState,
    path: str,
    ns: str,
    value: dict[str, Any],
    activation_id: str,
    sequence_id: str,
    depth: int,
) -> ActivationRecord:
    ref = await parse_ref(request, ns, path)
    spec, meta = await load_action(request, ref)
    args = ref.inherited | params_of(meta) | value
    if spec is None:
        if depth >= MAX_DEPTH:
            raise SequenceError(f"sequences nest deeper than {MAX_DEPTH}")
        return await run_sequence(request, ref, meta, args, activation_id, sequence_id, depth + 1)
    wait = spec.timeout_s + SLACK_S
    outcome = await state.invoker.invoke_sync(
        spec,
        orjson.dumps(args),
        content_type="application/json",
        wait=wait,
        cause=sequence_id,
        activation_id=activation_id,
    )
    if outcome.record is not None:
        return outcome.record
    deadline = asyncio.get_running_loop().time() + wait
    while asyncio.get_running_loop().time() < deadline:  # queued: its worker writes the record
        try:
            found = await state.activations.get(activation_id)
        except DeepfaasError:
            found = None
        if found is not None and found.status.terminal:
            return found
        await asyncio.sleep(0.2)
    raise SequenceError(f"did not finish within {wait:.0f} s")
