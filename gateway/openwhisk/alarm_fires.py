"""Firing OpenWhisk triggers from their alarms' ticks, in the gateway (where fires are fanned out).

The dispatchers' scheduler publishes one `openwhisk.alarm.tick` event per tick (claimed once,
its id derived from the tick). The gateways share the durable consumer `openwhisk-alarms` on
those events and fire the trigger through `gateway.openwhisk.triggers.fire`, as a manual fire
does, with the event id as the fire's activation id: a redelivered tick starts the same
activations again, which JetStream's de-duplication and the workers' claims make one run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

from fastapi import FastAPI, Request
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import BadRequestError

from eventbus.codec import from_nats
from eventbus.consume import fetch_batch, give_back, nak_all
from eventbus.errors import InvalidEventError
from eventbus.types import EVENTS_STREAM, event_subject
from gateway.openwhisk.alarms import ALARM_TYPE_SUFFIX
from gateway.openwhisk.common import ow_store
from gateway.openwhisk.triggers import fire
from gateway.state import state_of

log = logging.getLogger(__name__)
DURABLE: Final = "openwhisk-alarms"


class AlarmFires:
    """Consumes alarm ticks and fires their triggers (one task per gateway process)."""

    def __init__(self, app: FastAPI, *, retry_s: float = 1.0) -> None:
        self.app = app
        self.retry_s = retry_s
        self._task: asyncio.Task[None] | None = None
        self._pull: Any = None

    async def start(self) -> None:
        """Create (or keep) the durable consumer and start consuming."""
        bus = state_of(self._request()).bus
        subject = event_subject(bus.event_type(ALARM_TYPE_SUFFIX), bus.prefix)
        config = ConsumerConfig(
            durable_name=DURABLE,
            filter_subject=subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.NEW,
            ack_wait=30,
            max_deliver=-1,
        )
        with contextlib.suppress(BadRequestError):  # exists with fields that cannot change
            await bus.js.add_consumer(EVENTS_STREAM, config)
        self._pull = await bus.js.pull_subscribe(subject, durable=DURABLE, stream=EVENTS_STREAM)
        self._task = asyncio.create_task(self._consume(), name="openwhisk-alarms")

    async def stop(self) -> None:
        """Stop consuming."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._pull is not None:
            await give_back(self._pull)  # what came and was not fetched: redelivered now

    def _request(self) -> Request:
        """A request-shaped handle on the app, for the helpers the routes share."""
        return Request({"type": "http", "app": self.app, "headers": [], "method": "POST"})

    async def _consume(self) -> None:
        while True:
            msgs = await fetch_batch(self._pull, 16)
            for index, msg in enumerate(msgs):
                try:
                    await self._handle(msg)
                except asyncio.CancelledError:  # stopped mid-batch: the rest goes back now
                    await nak_all(msgs[index:])
                    raise
                except Exception as exc:  # the bus or a store failed: try the tick again
                    log.warning("alarm tick not fired yet (%s); retrying", exc)
                    await msg.nak(delay=self.retry_s)

    async def _handle(self, msg: Msg) -> None:
        try:
            event = from_nats(msg.headers, msg.data)
        except InvalidEventError as exc:
            log.warning("dropping an invalid alarm tick: %s", exc)
            await msg.term()
            return
        request = self._request()
        qname = event.subject or ""
        doc = await ow_store(request).get("trigger", qname)
        if doc is None:  # the trigger was deleted since
            await msg.ack()
            return
        data = event.json_data() if event.data else {}
        payload = data if isinstance(data, dict) else {}
        fired = await fire(request, qname, doc, payload, event.id)
        log.info("alarm %s of trigger %s: %s", event.id, qname, "fired" if fired else "no rule")
        await msg.ack()
