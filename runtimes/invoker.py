"""Synchronous invocations, written once: the gateway's and a function's calls of a function.

A sync call goes straight to a warm worker (`run.<function>`, a queue group). With no warm
worker it is queued instead (the controller is woken and starts one) and the caller waits for
the result on an inbox. A sync call that outruns its wait is queued too, under the same
activation id, so it completes even if its worker died (the safety net); the claim in
`runtimes.activations` keeps it to one run, and the caller gets the activation id (the
gateway answers 202, as OpenWhisk does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import nats.errors
from nats.aio.msg import Msg
from nats.js.api import PubAck

from eventbus.codec import to_nats
from eventbus.connection import Bus
from eventbus.errors import NotFoundError as DeepfaasNotFoundError
from eventbus.failover import FAILOVER_S, RETRY_AFTER_S, BusRefusedError, publish_or_refuse
from eventbus.invocations import FRESH_ID, enqueue, new_invocation
from eventbus.subjects import run_subject
from eventbus.types import CloudEvent
from eventbus.wake import Waker
from runtimes.activations import ActivationStore, new_activation_id
from runtimes.types import ActivationRecord, FunctionSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncResult:
    """A finished activation, or only its id when the wait ran out."""

    activation_id: str
    record: ActivationRecord | None


class SyncInvoker:
    """Runs functions and waits for their records, with the safety net described above."""

    def __init__(self, bus: Bus, *, source: str) -> None:
        self.bus = bus
        #: the CloudEvent ``source`` of the invocations sent (``/gateway``, ``/functions/deploy``)
        self.source = source
        self.waker = Waker(bus)

    async def invoke_sync(
        self,
        spec: FunctionSpec,
        body: bytes,
        *,
        content_type: str,
        wait: float,
        cause: str | None = None,
        activation_id: str | None = None,
    ) -> SyncResult:
        """Run and wait up to ``wait`` seconds for the record (a given id runs at most once)."""
        invocation = new_invocation(
            self.bus,
            spec.name,
            body,
            source=self.source,
            activation_id=activation_id or new_activation_id(),
            content_type=content_type,
            mode="sync",
            cause=cause,
            # an id made here is held by nothing else: its worker may skip the claim of a
            # quick run (`runtimes.worker.service`); a given id may have run already
            extra=None if activation_id else {FRESH_ID: "true"},
        )
        headers, data = to_nats(invocation)
        if not await self.bus.wait_connected(FAILOVER_S):
            raise _not_connected(invocation)
        try:
            reply = await self.bus.nc.request(
                run_subject(spec.name), data, timeout=wait, headers=headers
            )
        except nats.errors.NoRespondersError:
            return await self._queue_and_wait(invocation, wait)
        except nats.errors.TimeoutError:
            await self._queue_safety_net(invocation)
            return SyncResult(invocation.id, None)
        except (nats.errors.OutboundBufferLimitError, nats.errors.ConnectionReconnectingError):
            raise _not_connected(invocation) from None  # nothing was sent
        record = _record(reply)
        if record is None:  # the worker said `busy`: another run holds it; wait on the queue
            return await self._queue_and_wait(invocation, wait)
        return SyncResult(invocation.id, record)

    async def _enqueue(self, invocation: CloudEvent) -> PubAck:
        """Queue once (its id de-duplicates retries), or raise `BusRefusedError` (503)."""
        return await publish_or_refuse(
            self.bus,
            lambda timeout: enqueue(self.bus, invocation, timeout=timeout),
            what=f"activation {invocation.id} was not queued",
            if_unsure={"activation_id": invocation.id},
        )

    async def _queue_and_wait(self, invocation: CloudEvent, wait: float) -> SyncResult:
        inbox = self.bus.nc.new_inbox()
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()

        async def _got(msg: Msg) -> None:
            if not future.done():
                future.set_result(msg)

        sub = await self.bus.nc.subscribe(inbox, cb=_got, max_msgs=1)
        try:
            queued = invocation.model_copy(
                update={"extensions": {**invocation.extensions, "replyto": inbox}}
            )
            ack = await self._enqueue(queued)
            await self.waker.wake(str(invocation.subject), now=True)
            if ack.duplicate:
                # A copy of this id is queued already (a given id: another caller's, or an
                # earlier try's), with its own inbox: this one's is never answered. Its record is.
                return await self._record_within(invocation.id, wait)
            try:
                msg = await asyncio.wait_for(future, wait)
            except TimeoutError:
                return SyncResult(invocation.id, None)
            return SyncResult(invocation.id, _record(msg))
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _record_within(self, activation_id: str, wait: float) -> SyncResult:
        """The activation's final record, read until it is there or ``wait`` runs out."""
        store = ActivationStore(self.bus)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        pause = 0.05
        while True:
            with contextlib.suppress(DeepfaasNotFoundError):
                record = await store.get(activation_id)
                if record.status.terminal:
                    return SyncResult(activation_id, record)
            if loop.time() + pause >= deadline:
                return SyncResult(activation_id, None)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)

    async def _queue_safety_net(self, invocation: CloudEvent) -> None:
        try:
            await self._enqueue(invocation)
        except BusRefusedError as exc:
            # the request went out: a worker may be running it, so the caller gets its id
            log.warning("activation %s: not queued after a sync timeout: %s", invocation.id, exc)
            raise BusRefusedError(
                f"activation {invocation.id}: the bus went away during the call; it may have "
                f"run: see /v1/activations/{invocation.id}",
                retry_after=RETRY_AFTER_S,
                reason="unavailable",
                maybe_stored=True,
                activation_id=invocation.id,
            ) from exc


def _not_connected(invocation: CloudEvent) -> BusRefusedError:
    return BusRefusedError(
        f"activation {invocation.id} was not sent: the bus is not connected; try again later",
        retry_after=RETRY_AFTER_S,
        reason="unavailable",
        maybe_stored=False,
    )


def _record(msg: Msg) -> ActivationRecord | None:
    try:
        record = ActivationRecord.model_validate_json(msg.data)
    except ValueError:
        return None
    return record
