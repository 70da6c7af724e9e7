"""Invocations of a function whose runtime is pending (no GPU free): a bounded wait, then a failure.

While a GPU runtime cannot start a worker, its invocations stay queued and the runtime's status
says why (`control.runtimes`). Once an invocation has waited ``max_wait_s`` since it was
accepted, the controller fails it here, as a worker would: a final record naming the reason,
the completion event, a dead letter for an async one (replayable once a GPU is free), the
answer to a waiting sync caller, then the ack. Younger ones go back with a short delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg

from eventbus.codec import from_nats
from eventbus.connection import Bus
from eventbus.consume import fetch_batch, give_back
from eventbus.dlq import dead_letter
from eventbus.errors import InvalidEventError
from eventbus.streams import consumer_name
from eventbus.types import INVOCATIONS_STREAM, CloudEvent, invoke_subject
from runtimes.activations import ActivationStore, AlreadyDone, Claimed, LostClaimError
from runtimes.tally import CompletionTally, TallySender
from runtimes.types import ActivationRecord, ActivationStatus, FunctionSpec
from runtimes.worker.results import (
    CompletionNotPublishedError,
    emit_completion,
    emit_completion_again,
)

log = logging.getLogger(__name__)
WORKER_NAME = "controller"
RECHECK_S = 1.0


class PendingInvocations:
    """Fails the queued invocations of pending runtimes once they have waited too long."""

    def __init__(self, bus: Bus, max_wait_s: float) -> None:
        self.bus = bus
        self.max_wait_s = max_wait_s
        self.store = ActivationStore(bus)
        self._subs: dict[str, Any] = {}
        #: the failures' counts, sent after each batch (`runtimes.tally`)
        self._tally = TallySender(bus, CompletionTally())

    async def expire(self, spec: FunctionSpec, reason: str) -> int:
        """Fail the invocations that waited ``max_wait_s``; return how many."""
        sub = self._subs.get(spec.name)
        if sub is None:
            sub = await self.bus.js.pull_subscribe(
                invoke_subject(spec.name),
                durable=consumer_name(spec.name),
                stream=INVOCATIONS_STREAM,
            )
            self._subs[spec.name] = sub
        msgs = await fetch_batch(sub, 256, timeout=0.05, pause=0)
        try:
            return await self._expire_batch(spec, reason, msgs)
        finally:
            await self._tally.send()

    async def _expire_batch(self, spec: FunctionSpec, reason: str, msgs: list[Msg]) -> int:
        failed = 0
        for msg in msgs:
            try:
                invocation = from_nats(msg.headers, msg.data)
            except InvalidEventError:
                await msg.term()
                continue
            waited = _waited_s(invocation, msg)
            if waited < self.max_wait_s:
                await msg.nak(delay=min(RECHECK_S, self.max_wait_s - waited))
                continue
            await self._fail(spec, invocation, msg, reason, waited)
            failed += 1
        return failed

    async def forget(self, function: str) -> None:
        """Stop pulling for a function that is no longer pending."""
        sub = self._subs.pop(function, None)
        if sub is not None:
            # a short request may still have brought one: to the function's workers now, not
            # after its ack wait
            await give_back(sub)

    async def close(self) -> None:
        """Unsubscribe everything (pull subscriptions must go before the connection drains)."""
        for function in list(self._subs):
            await self.forget(function)
        await self._tally.send()

    async def _fail(
        self, spec: FunctionSpec, invocation: CloudEvent, msg: Msg, reason: str, waited: float
    ) -> None:
        now = datetime.now(UTC)
        mode = str(invocation.extensions.get("mode", "async"))
        cause = invocation.extensions.get("causeid")
        record = ActivationRecord(
            id=invocation.id,
            function=spec.name,
            version=spec.version,
            status=ActivationStatus.RUNNING,
            mode=mode,
            accepted=invocation.time,
            start=now,
            wait_ms=round(waited * 1000, 3),
            cause=cause if isinstance(cause, str) and cause else None,
            worker=WORKER_NAME,
        )
        claim = await self.store.claim(record, lease=5.0)
        if isinstance(claim, AlreadyDone):
            # its completion may not have reached the bus (a failover): send it again
            try:
                await emit_completion_again(self.bus, claim.record, tally=self._tally.tally)
            except CompletionNotPublishedError:
                await msg.nak(delay=RECHECK_S)
                return
            await msg.ack()
            return
        if not isinstance(claim, Claimed):
            await msg.nak(delay=RECHECK_S)
            return
        final = claim.record.model_copy(
            update={
                "status": ActivationStatus.ERROR,
                "end": now,
                "error": f"pending: {reason}; gave up after waiting {self.max_wait_s:g} s",
                "annotations": {"pending": reason},
            }
        )
        writes: list[Any] = [
            self.store.finish(claim, final),
            emit_completion(self.bus, final, tally=self._tally.tally),
        ]
        if mode == "async":
            writes.append(
                dead_letter(
                    self.bus,
                    kind="invoke",
                    target=spec.name,
                    event=invocation,
                    error=final.error or "pending",
                    attempts=final.attempts,
                    activation_id=final.id,
                )
            )
        results = await asyncio.gather(*writes, return_exceptions=True)
        if isinstance(results[0], LostClaimError):
            await msg.ack()
            return
        for result in results:
            if isinstance(result, BaseException):
                raise result
        log.warning("activation %s of %s failed: %s", final.id, spec.name, final.error)
        replyto = invocation.extensions.get("replyto")
        if isinstance(replyto, str) and replyto:
            with contextlib.suppress(Exception):
                await self.bus.nc.publish(replyto, final.model_dump_json().encode())
        if results[1] is True:
            await msg.ack()
        else:  # the completion event was not taken: the redelivery sends it again
            await msg.nak(delay=RECHECK_S)


def _waited_s(invocation: CloudEvent, msg: Msg) -> float:
    accepted = invocation.time
    if accepted is None:
        with contextlib.suppress(Exception):
            accepted = msg.metadata.timestamp
    if accepted is None:
        return 0.0
    if accepted.tzinfo is None:
        accepted = accepted.replace(tzinfo=UTC)
    return (datetime.now(UTC) - accepted).total_seconds()
