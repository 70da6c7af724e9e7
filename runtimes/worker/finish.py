"""The end of one activation: its final record, completion event and dead letter written
together, then its caller answered and its queued message settled."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

import orjson
from nats.aio.msg import Msg

from eventbus.backoff import Backoff
from eventbus.connection import Bus
from eventbus.dlq import dead_letter
from eventbus.storage import Storage
from eventbus.types import CloudEvent
from runtimes.activations import ActivationStore, AlreadyDone, Busy, Claimed, LostClaimError
from runtimes.settings import WorkerSettings
from runtimes.tally import CompletionTally
from runtimes.types import ActivationRecord, ActivationStatus, Context, FunctionSpec
from runtimes.worker.callbacks import Callbacks
from runtimes.worker.executor import Outcome
from runtimes.worker.results import (
    CompletionNotPublishedError,
    emit_completion,
    emit_completion_again,
    write_output,
)

log = logging.getLogger(__name__)


class Finisher:
    """Writes what one worker's activations end with and answers for them."""

    def __init__(
        self,
        bus: Bus,
        store: ActivationStore,
        spec: FunctionSpec,
        settings: WorkerSettings,
        *,
        tally: CompletionTally,
        callbacks: Callbacks,
    ) -> None:
        self.bus = bus
        self.store = store
        self.spec = spec
        self.settings = settings
        self.tally = tally
        self.callbacks = callbacks
        #: activations this worker finished (its announcements carry the count)
        self.completed = 0

    def backoff(self, attempt: int) -> float:
        """The delay before try ``attempt + 1`` of a queued activation."""
        return Backoff(self.settings.retry_base_s, self.settings.retry_max_s).delay(attempt)

    async def final_record(
        self,
        claim: Claimed,
        outcome: Outcome,
        ctx: Context,
        storage: Storage | None,
        *,
        cold: bool,
        init_ms: float,
    ) -> ActivationRecord:
        """The record a run ends with; its result written to the trigger's output first, if
        it has one (a failed write fails the activation)."""
        final = claim.record.model_copy(
            update={
                "status": outcome.status,
                "start": outcome.start,
                "end": datetime.now(UTC),
                "duration_ms": round(outcome.duration_ms, 3),
                "result": outcome.result,
                "logs": outcome.logs,
                "error": outcome.error,
                "error_code": outcome.error_code,
                "error_detail": outcome.error_detail,
                "cold_start": cold,
                "init_ms": round(init_ms, 3) if cold else None,
                "annotations": dict(ctx.annotations),
            }
        )
        if final.status is not ActivationStatus.SUCCESS or not ctx.output:
            return final
        if outcome.result is None:
            return final
        try:
            written = await write_output(
                self.bus,
                storage,
                ctx.output,
                outcome.result,
                announce=self.settings.storage_events == "platform",
            )
        except Exception as exc:
            outcome.status = ActivationStatus.ERROR
            return final.model_copy(
                update={
                    "status": ActivationStatus.ERROR,
                    "error": f"could not write the result to {ctx.output['bucket']}/"
                    f"{ctx.output['key']}: {exc}",
                }
            )
        update: dict[str, Any] = {"output": written}
        if isinstance(outcome.result, bytes):
            update["result"] = {"output": written}
        return final.model_copy(update=update)

    async def settle_duplicate(
        self,
        claim: AlreadyDone | Busy,
        invocation: CloudEvent,
        reply: Msg | None,
        queued: Msg | None,
    ) -> None:
        """Answer for an activation that is done already, or held by a live run elsewhere."""
        if isinstance(claim, AlreadyDone):
            try:
                await emit_completion_again(self.bus, claim.record, tally=self.tally)
            except CompletionNotPublishedError:
                await self.answer(claim.record, invocation, reply, queued, announced=False)
                return
            await self.answer(claim.record, invocation, reply, queued)
        elif queued is not None:
            await queued.nak(delay=claim.retry_after + 0.05)
        elif reply is not None:
            await reply.respond(orjson.dumps({"status": "busy", "id": invocation.id}))

    async def complete(
        self,
        claim: Claimed,
        final: ActivationRecord,
        invocation: CloudEvent,
        reply: Msg | None,
        queued: Msg | None,
        *,
        dead: bool,
    ) -> None:
        """Write the final record, its completion event and (``dead``) its dead letter, then
        answer."""
        # Written at once (their acks pipelined); the event and the letter are idempotent (ids
        # from the activation id).
        others: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(emit_completion(self.bus, final, tally=self.tally))
        ]
        if dead:
            letter = dead_letter(
                self.bus,
                kind="invoke",
                target=self.spec.name,
                event=invocation,
                error=final.error or final.status.value,
                traceback=final.error_detail if isinstance(final.error_detail, str) else None,
                attempts=final.attempts,
                activation_id=final.id,
            )
            others.append(asyncio.ensure_future(letter))
        recorded: BaseException | None = None
        try:
            await self.store.finish(claim, final)  # in this task: one task fewer per run
        except asyncio.CancelledError:
            for other in others:
                other.cancel()
            raise
        except Exception as exc:
            recorded = exc
        written = [recorded, *await asyncio.gather(*others, return_exceptions=True)]
        if isinstance(written[0], LostClaimError):
            log.warning("activation %s finished elsewhere; dropping this result", final.id)
            if queued is not None:
                await queued.ack()
            return
        for result in written:
            if isinstance(result, BaseException):
                raise result
        self.completed += 1
        await self.answer(final, invocation, reply, queued, announced=written[1] is True)

    async def answer(
        self,
        record: ActivationRecord,
        invocation: CloudEvent,
        reply: Msg | None,
        queued: Msg | None,
        *,
        announced: bool = True,
    ) -> None:
        """Answer the caller and settle the queued message; one whose completion event the bus
        did not take is redelivered instead, and its next worker sends the event again.

        A queued activation with a callback is acked once the callback was tried: a worker
        that dies before leaves it to the next delivery, whose worker finds it done and posts
        the callback again (at least once, as webhooks are)."""
        replyto = invocation.extensions.get("replyto")
        if reply is not None or (isinstance(replyto, str) and replyto):
            body = record.model_dump_json().encode()
            if reply is not None:
                await reply.respond(body)
            if isinstance(replyto, str) and replyto:
                with contextlib.suppress(Exception):
                    await self.bus.nc.publish(replyto, body)
        callback = invocation.extensions.get("callback")
        callback = callback if isinstance(callback, str) and callback else None
        if queued is None:
            if callback is not None:  # nothing to hold back: posted once, from here
                self.callbacks.post(callback, record, None)
            return
        if not announced:
            await queued.nak(delay=self.backoff(1))
        elif callback is not None:
            self.callbacks.post(callback, record, queued)
        else:
            await queued.ack()
