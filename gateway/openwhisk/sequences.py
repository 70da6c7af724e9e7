"""Sequences, run by a gateway: each component an ordinary activation, in order; resumed by
another gateway (or this one, restarted) when the one running it dies.

A sequence is an OpenWhisk document only (no function, no worker). Running one: the gateway
writes a hold on it (its activation id in the `sequence_holds` bucket: the sequence, its
parameters, this gateway and how long its hold lasts) and the sequence's record as `running`,
then invokes each component through the invoker (sync, with a wait of the component's own
timeout) under an activation id derived from the sequence's id and the component's index, with
`cause` = the sequence's id; the result of each (over the component's default parameters) is
the next one's input. The first failure ends it. The final record (result = the last result,
logs = the component activation ids) is written once and announced as a worker announces its
own (`activation.completed|failed`), and the hold is dropped. While it runs the gateway renews
its hold, and stops if another gateway took it; every gateway looks for holds that ran out
(`SequenceKeeper`) and takes one over with compare-and-set, then resumes the sequence: a
component whose record is final is not run again, its result is used; the others run under
their same ids, which the workers' claims keep to one run each.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import FastAPI, Request
from nats.js.kv import KeyValue

from eventbus.errors import DeepfaasError
from eventbus.failover import RETRY_AFTER_S, BusRefusedError, publish_or_refuse
from eventbus.kv import entry, keys, write
from eventbus.streams import SEQUENCES_KV, bind_bucket
from gateway.openwhisk.errors import SequenceError
from gateway.openwhisk.refs import ActionRef, load_action, params_of, parse_ref
from gateway.state import GatewayState, state_of
from runtimes.types import ActivationRecord, ActivationStatus
from runtimes.worker.results import emit_completion, emit_completion_again

log = logging.getLogger(__name__)
MAX_DEPTH = 8
#: time a component may take beyond its own timeout (queueing, a cold start)
SLACK_S = 30.0


def component_id(sequence_id: str, index: int) -> str:
    """The activation id of a sequence's ``index``-th component (the same on every retry)."""
    return hashlib.sha256(f"{sequence_id}/{index}".encode()).hexdigest()[:32]


async def start_sequence(
    request: Request,
    ref: ActionRef,
    meta: dict[str, Any],
    params: dict[str, Any],
    activation_id: str,
    cause: str | None = None,
) -> asyncio.Task[ActivationRecord] | None:
    """Hold the sequence for this gateway and run it in the background; the task's result is
    its final record. None when another gateway holds it already (a rule's fire delivered
    again): that run finishes it. `BusRefusedError` (503) when the bus would not take the hold."""
    keeper: SequenceKeeper = request.app.state.sequences
    return await keeper.begin(request, ref, meta, params, activation_id, cause)


class HoldLostError(RuntimeError):
    """Another gateway took the sequence over: this run must not write its end."""


@dataclass
class _Hold:
    """This gateway's hold on one sequence: the revision it wrote last, and until when that
    write holds it. Writes go one at a time (the renewal and the check before the end)."""

    activation_id: str
    doc: dict[str, Any]
    revision: int
    until: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class SequenceKeeper:
    """The sequences this gateway runs, their holds renewed; and the sequences whose gateway
    is gone (a hold that ran out), taken over and resumed. Holds live in their own bucket
    (`sequence_holds`, key = the sequence's activation id)."""

    def __init__(self, app: FastAPI, *, hold_s: float) -> None:
        self.app = app
        self.hold_s = hold_s
        #: this gateway process, in the holds it writes
        self.owner = uuid.uuid4().hex[:16]
        self._running: dict[str, asyncio.Task[ActivationRecord]] = {}
        self._scan: asyncio.Task[None] | None = None
        self._kv: KeyValue | None = None
        self._stopping = False

    async def start(self) -> None:
        """Start looking for holds that ran out (at once: a restarted gateway's own)."""
        self._scan = asyncio.create_task(self._scan_loop(), name="sequence-holds")

    async def stop(self) -> None:
        """Stop: the sequences still running keep their holds until these run out, and are
        then resumed by another gateway, or by this one started again."""
        self._stopping = True
        tasks = [t for t in (self._scan, *self._running.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def begin(
        self,
        request: Request,
        ref: ActionRef,
        meta: dict[str, Any],
        params: dict[str, Any],
        activation_id: str,
        cause: str | None,
    ) -> asyncio.Task[ActivationRecord] | None:
        """Write the hold, then start the run (see `start_sequence`)."""
        if activation_id in self._running:  # a rule's fire delivered again while it runs here
            return self._running[activation_id]
        if self._stopping:
            raise BusRefusedError(
                f"sequence {activation_id} was not started: this gateway is stopping; try again",
                retry_after=RETRY_AFTER_S,
                reason="unavailable",
                maybe_stored=False,
            )
        doc = {
            "ref": {"ns": ref.ns, "name": ref.name, "package": ref.package, "home": ref.home},
            "meta": meta,
            "params": params,
            "cause": cause,
        }
        kv = await self._bucket()
        hold = _Hold(activation_id, doc, 0, 0.0)
        value, until = self._held(hold)
        revision = await publish_or_refuse(
            state_of(request).bus,
            lambda _: write(kv, activation_id, value, last=None),
            what=f"sequence {activation_id} was not started",
            if_unsure={"activation_id": activation_id},
        )
        if revision is None:  # held already: by a try of ours that went through, or by another
            found = await entry(kv, activation_id)
            held = orjson.loads(found.value or b"{}") if found is not None else {}
            if found is None or held.get("owner") != self.owner:
                log.info("sequence %s is held by another gateway already", activation_id)
                return None
            revision, until = found.revision or 0, float(held.get("until", 0))
        hold.revision, hold.until = revision, until
        # a given id (a rule's fire) may have run before: resume it rather than start over
        return self._launch(request, hold, resume=cause is not None)

    def _launch(
        self, request: Request, hold: _Hold, *, resume: bool
    ) -> asyncio.Task[ActivationRecord]:
        task = asyncio.create_task(self._run(request, hold, resume))
        self._running[hold.activation_id] = task
        task.add_done_callback(functools.partial(self._ended, hold.activation_id))
        return task

    def _ended(self, activation_id: str, task: asyncio.Task[ActivationRecord]) -> None:
        if self._running.get(activation_id) is task:
            del self._running[activation_id]
        if not task.cancelled() and task.exception() is not None:
            # its hold stays: it runs out, and the sequence is resumed then
            log.warning("sequence %s stopped: %s", activation_id, task.exception())

    async def _run(self, request: Request, hold: _Hold, resume: bool) -> ActivationRecord:
        run = asyncio.current_task()
        assert run is not None
        renewing = asyncio.create_task(self._renew(hold, run))
        try:
            doc = hold.doc
            record = await run_sequence(
                request,
                ActionRef(**doc["ref"]),
                doc["meta"],
                doc["params"],
                hold.activation_id,
                doc["cause"],
                resume=resume,
                before_end=functools.partial(self._still_held, hold),
            )
        finally:
            renewing.cancel()
        # only this hold's own revision: a hold another gateway took over stays its own
        with contextlib.suppress(Exception):
            async with hold.lock:
                await (await self._bucket()).delete(hold.activation_id, last=hold.revision)
        return record

    async def _renew(self, hold: _Hold, run: asyncio.Task[Any]) -> None:
        while True:
            await asyncio.sleep(self.hold_s / 3)
            try:
                await self._still_held(hold)
            except HoldLostError as exc:
                log.warning("sequence %s: %s; stopping this run", hold.activation_id, exc)
                run.cancel()
                return
            except Exception as exc:  # the bus is away: try again, while the hold lasts
                if time.time() < hold.until:
                    log.warning("sequence %s: hold not renewed yet: %s", hold.activation_id, exc)
                    continue
                log.warning("sequence %s: hold ran out unrenewed; stopping", hold.activation_id)
                run.cancel()
                return

    async def _still_held(self, hold: _Hold) -> None:
        """Renew the hold; `HoldLostError` when another gateway took it over (or it ran out
        while the bus was away), the bus's error when it could not be written."""
        async with hold.lock:
            if time.time() >= hold.until:
                raise HoldLostError("its hold ran out")
            value, until = self._held(hold)
            renewed = await write(
                await self._bucket(), hold.activation_id, value, last=hold.revision
            )
            if renewed is None:
                raise HoldLostError("another gateway took it over")
            hold.revision, hold.until = renewed, until

    async def _scan_loop(self) -> None:
        rounds = 0
        while True:
            try:
                await self._take_over()
                if rounds % 120 == 0:  # delete markers of dropped holds, now and then
                    await (await self._bucket()).purge_deletes(olderthan=60)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the bus is away: look again later
                log.warning("sequence holds not checked: %s", exc)
            rounds += 1
            await asyncio.sleep(max(0.2, self.hold_s / 2))

    async def _take_over(self) -> None:
        kv = await self._bucket()
        for activation_id in await keys(kv):
            if activation_id in self._running or self._stopping:
                continue
            found = await entry(kv, activation_id)
            if found is None or not found.value:
                continue
            doc = orjson.loads(found.value)
            if float(doc.get("until", 0)) > time.time():
                continue
            if not _well_formed(doc):
                log.error("dropping a hold this version cannot read: %s", activation_id)
                await kv.delete(activation_id, last=found.revision)
                continue
            hold = _Hold(activation_id, doc, found.revision or 0, 0.0)
            value, until = self._held(hold)
            revision = await write(kv, activation_id, value, last=hold.revision)
            if revision is None:
                continue  # another gateway took it first
            hold.revision, hold.until = revision, until
            log.info("resuming sequence %s: the hold of its gateway ran out", activation_id)
            self._launch(self._request(), hold, resume=True)

    def _held(self, hold: _Hold) -> tuple[bytes, float]:
        """The hold's next value, and until when it holds (counted from before the write)."""
        until = time.time() + self.hold_s
        return orjson.dumps({**hold.doc, "owner": self.owner, "until": until}), until

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await bind_bucket(state_of(self._request()).bus.js, SEQUENCES_KV)
        return self._kv

    def _request(self) -> Request:
        """A request-shaped handle on the app, for the helpers the routes share."""
        return Request({"type": "http", "app": self.app, "headers": [], "method": "POST"})


def _well_formed(doc: dict[str, Any]) -> bool:
    ref = doc.get("ref")
    return (
        isinstance(ref, dict)
        and {"ns", "name"} <= set(ref)
        and isinstance(doc.get("meta"), dict)
        and isinstance(doc.get("params"), dict)
    )


async def run_sequence(
    request: Request,
    ref: ActionRef,
    meta: dict[str, Any],
    params: dict[str, Any],
    activation_id: str,
    cause: str | None = None,
    depth: int = 0,
    *,
    resume: bool = False,
    before_end: Callable[[], Awaitable[None]] | None = None,
) -> ActivationRecord:
    """Run every component in order; write and return the sequence's record. ``resume``:
    a run of it may have begun; a final record of it, or of a component, is used as it is.
    ``before_end`` runs before the final record is written (it raises if it must not be)."""
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
    earlier = await _recorded(state, activation_id) if resume else None
    if earlier is not None and earlier.status.terminal:
        # its gateway may have died before announcing it: again, while that is still a
        # duplicate JetStream drops (a rule's fire delivered much later announces nothing)
        await emit_completion_again(state.bus, earlier, tally=state.metrics.finished)
        return earlier
    if earlier is not None:
        record, start = earlier, earlier.start or start
    else:
        await state.activations.put(record)
    value, ids = params, []
    status, error = ActivationStatus.SUCCESS, None
    for index, path in enumerate(meta.get("components", [])):
        own = component_id(activation_id, index)
        ids.append(own)
        try:
            done = await _recorded(state, own) if resume else None
            if done is None or not done.status.terminal:
                done = await _component(
                    request, state, path, ref.ns, value, own, activation_id, depth, resume
                )
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
    if before_end is not None:
        await before_end()
    await state.activations.put(final)
    # `activation.completed|failed`, as a worker's, and counted in this gateway's metrics
    await emit_completion(state.bus, final, tally=state.metrics.finished)
    return final


async def _recorded(state: GatewayState, activation_id: str) -> ActivationRecord | None:
    try:
        return await state.activations.get(activation_id)
    except DeepfaasError:  # none yet
        return None


async def _component(
    request: Request,
    state: GatewayState,
    path: str,
    ns: str,
    value: dict[str, Any],
    activation_id: str,
    sequence_id: str,
    depth: int,
    resume: bool,
) -> ActivationRecord:
    ref = await parse_ref(request, ns, path)
    spec, meta = await load_action(request, ref)
    args = ref.inherited | params_of(meta) | value
    if spec is None:
        if depth >= MAX_DEPTH:
            raise SequenceError(f"sequences nest deeper than {MAX_DEPTH}")
        return await run_sequence(
            request, ref, meta, args, activation_id, sequence_id, depth + 1, resume=resume
        )
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
