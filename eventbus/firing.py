"""What a trigger's match does: one invocation enqueued, or the skip made visible (a counter,
a `trigger.skipped` event and, for a missing function, a dead letter)."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Final

from eventbus.connection import Bus
from eventbus.dispatch_state import KnownState
from eventbus.dlq import dead_letter
from eventbus.invocations import enqueue
from eventbus.namespaces import EVENT_ATTRIBUTE, namespace_of
from eventbus.publish import publish_event
from eventbus.triggers import Trigger, invocation_for
from eventbus.types import CloudEvent
from eventbus.wake import Waker

log = logging.getLogger(__name__)
SKIPPED_SUFFIX: Final = "trigger.skipped"


class Firing:
    """Fires triggers for the dispatcher: its events' matches and its schedules' ticks."""

    def __init__(self, bus: Bus, known: KnownState, stats: Counter[str]) -> None:
        self.bus = bus
        self.known = known
        self.stats = stats
        self.waker = Waker(bus)
        self.skipped_type = bus.event_type(SKIPPED_SUFFIX)
        self.activation_prefix = bus.event_type("activation.")

    async def fire(
        self, event: CloudEvent, event_json: bytes, obj: dict[str, Any] | None, trigger: Trigger
    ) -> None:
        """Enqueue ``trigger``'s invocation for ``event``, unless it is to be skipped."""
        invocation = invocation_for(self.bus, event, trigger, event_json=event_json, obj=obj)
        if not trigger.enabled:
            await self.skip(event, trigger, invocation, "disabled")
        elif event.type.startswith(self.activation_prefix) and (
            event.source == f"/functions/{trigger.function}"
        ):
            await self.skip(event, trigger, invocation, "loop")
        elif not await self.known.function_exists(trigger.function):
            await self.skip(event, trigger, invocation, "function_missing")
        else:
            ack = await enqueue(self.bus, invocation)
            self.stats["invocations_duplicate" if ack.duplicate else "invocations_enqueued"] += 1
            if not ack.duplicate:
                await self.waker.wake(trigger.function)

    async def skip(
        self, event: CloudEvent, trigger: Trigger, invocation: CloudEvent, reason: str
    ) -> None:
        """Make a skipped match visible: a counter, a `trigger.skipped` event, a dead letter."""
        self.stats[f"skipped_{reason}"] += 1
        log.info("event %s: trigger %s skipped (%s)", event.id, trigger.name, reason)
        if event.type == self.skipped_type:
            return  # never report a skip of a skip notice: that could loop forever
        notice = CloudEvent.create(
            id=f"{invocation.id}-skipped",
            type=self.skipped_type,
            source=f"/triggers/{trigger.name}",
            subject=trigger.name,
            extensions={EVENT_ATTRIBUTE: namespace_of(trigger.name)},
            data={
                "trigger": trigger.name,
                "function": trigger.function,
                "reason": reason,
                "event_id": event.id,
                "event_type": event.type,
                "activation_id": invocation.id,
            },
        )
        await publish_event(self.bus, notice)
        if reason == "function_missing":
            await dead_letter(
                self.bus,
                kind="dispatch",
                target=trigger.function,
                event=invocation,
                error=f"function {trigger.function!r} of trigger {trigger.name!r} does not exist",
                attempts=1,
                activation_id=invocation.id,
            )
