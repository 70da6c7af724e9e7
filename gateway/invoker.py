"""Invoking functions: async through the INVOCATIONS queue (one or a batch), and sync as
`runtimes.invoker.SyncInvoker` does it for every caller (request-reply, queue-and-wait with no
warm worker, the safety net when the wait runs out: 202 with the activation id).
"""

from __future__ import annotations

import logging

from eventbus.connection import Bus
from eventbus.invocations import FRESH_ID, enqueue_many, new_invocation
from runtimes.activations import new_activation_id
from runtimes.invoker import SyncInvoker
from runtimes.invoker import SyncResult as SyncResult
from runtimes.types import FunctionSpec

log = logging.getLogger(__name__)
SOURCE = "/gateway"


class Invoker(SyncInvoker):
    """Sends invocations on their way."""

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus, source=SOURCE)

    async def invoke_async(
        self,
        spec: FunctionSpec,
        body: bytes,
        *,
        content_type: str,
        callback: str | None = None,
        cause: str | None = None,
        activation_id: str | None = None,
    ) -> str:
        """Queue an invocation; return its activation id once JetStream has stored it."""
        invocation = new_invocation(
            self.bus,
            spec.name,
            body,
            source=SOURCE,
            activation_id=activation_id or new_activation_id(),
            content_type=content_type,
            mode="async",
            callback=callback,
            cause=cause,
            extra=None if activation_id else {FRESH_ID: "true"},
        )
        await self._enqueue(invocation)
        await self.waker.wake(spec.name)
        return invocation.id

    async def invoke_batch(
        self, spec: FunctionSpec, bodies: list[bytes], *, callback: str | None = None
    ) -> tuple[list[str], list[int]]:
        """Queue one async activation per JSON body, acks pipelined: (their ids in order, the
        indexes of those JetStream did not store)."""
        invocations = [
            new_invocation(
                self.bus,
                spec.name,
                body,
                source=SOURCE,
                activation_id=new_activation_id(),
                content_type="application/json",
                mode="async",
                callback=callback,
                extra={FRESH_ID: "true"},
            )
            for body in bodies
        ]
        errors = await enqueue_many(self.bus, invocations)
        failed = [index for index, error in enumerate(errors) if error is not None]
        if len(failed) < len(invocations):
            await self.waker.wake(spec.name)
        for error in {type(e).__name__: e for e in errors if e is not None}.values():
            log.warning("batch of %s: some invocations not queued: %r", spec.name, error)
        return [invocation.id for invocation in invocations], failed
