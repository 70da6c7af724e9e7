"""What a dispatcher knows from KV: the triggers (and their `FilterIndex`), the functions and
the event schedules, each followed by a watch; and whether the trigger index is fresh.

A watch's first snapshot replaces what was known, and so does the snapshot after each
reconnect; `KnownState.catch_up_triggers` waits until the trigger watch has applied every
revision the bucket held when it was asked (`eventbus.dispatcher` asks before each batch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from nats.errors import Error as NatsError

from eventbus.connection import Bus
from eventbus.filters import FilterIndex
from eventbus.kv import entry
from eventbus.scheduler import EMIT_PREFIX, EventSchedule
from eventbus.streams import FUNCTIONS_KV, SCHEDULES_KV, TRIGGERS_KV
from eventbus.triggers import Trigger

log = logging.getLogger(__name__)


class KnownState:
    """Triggers, functions and event schedules as the bus has them, kept by watches."""

    def __init__(self, bus: Bus, stats: Counter[str]) -> None:
        self.bus = bus
        #: the dispatcher's counters (unreadable triggers are counted here)
        self.stats = stats
        self.index: FilterIndex[str] = FilterIndex()
        self.triggers: dict[str, Trigger] = {}
        self.functions: set[str] = set()
        self.event_schedules: dict[str, EventSchedule] = {}
        #: set when the triggers change
        self.triggers_changed = asyncio.Event()
        #: the last KV revision each watch has applied, and a signal on every step
        self._applied: dict[str, int] = {}
        self._watch_step = asyncio.Event()

    def watches(self) -> tuple[list[asyncio.Task[None]], list[asyncio.Event]]:
        """The watches, started, and an event each sets once its first snapshot is loaded."""
        synced = [asyncio.Event(), asyncio.Event(), asyncio.Event()]
        tasks = [
            asyncio.create_task(self._watch(TRIGGERS_KV, self._load_triggers, synced[0])),
            asyncio.create_task(self._watch(FUNCTIONS_KV, self._load_functions, synced[1])),
            asyncio.create_task(
                self._watch(SCHEDULES_KV, self._load_event_schedules, synced[2], EMIT_PREFIX)
            ),
        ]
        return tasks, synced

    async def _watch(
        self,
        bucket: str,
        load: Callable[[dict[str, bytes], bool], None],
        synced: asyncio.Event,
        prefix: str = "",
    ) -> None:
        """Follow a bucket (its keys under ``prefix``); after each (re)connect the snapshot
        replaces what was known."""
        while True:
            watcher: Any = None
            try:
                kv = await self.bus.kv(bucket)
                watcher = await (kv.watch(prefix + ">") if prefix else kv.watchall())
                snapshot: dict[str, bytes] = {}
                live = False
                pending = 0
                async for entry in watcher:
                    if entry is None:
                        load(snapshot, True)
                        live = True
                        synced.set()
                        self._applied_up_to(bucket, pending)
                        continue
                    deleted = entry.operation in ("DEL", "PURGE") or not entry.value
                    change = {entry.key: b"" if deleted else bytes(entry.value)}
                    if live:
                        load(change, False)
                        self._applied_up_to(bucket, entry.revision or 0)
                    else:
                        pending = max(pending, entry.revision or 0)
                        if deleted:
                            snapshot.pop(entry.key, None)
                        else:
                            snapshot.update(change)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("watch of %s ended (%s); watching again", bucket, exc)
                await asyncio.sleep(0.5)
            finally:
                if watcher is not None:
                    with contextlib.suppress(Exception):
                        await watcher.stop()

    def _applied_up_to(self, bucket: str, revision: int) -> None:
        self._applied[bucket] = max(self._applied.get(bucket, 0), revision)
        self._watch_step.set()

    async def catch_up_triggers(self, *, timeout: float = 2.0) -> bool:
        """Wait until the trigger watch has applied every trigger written before now.

        Events in a fetched batch were stored before the fetch, so a trigger whose creation
        was answered before its event was published is in the index when the event is matched
        (a watch alone may lag it: an upload right after a new trigger would go unmatched).
        """
        try:
            info = await self.bus.js.stream_info(f"KV_{TRIGGERS_KV}")
        except (NatsError, TimeoutError) as exc:
            log.debug("trigger index freshness unknown: %s", exc)
            return False
        last = info.state.last_seq or 0
        deadline = asyncio.get_running_loop().time() + timeout
        while self._applied.get(TRIGGERS_KV, 0) < last:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                log.warning("trigger index behind the bucket (%s < %s)", self._applied, last)
                return False
            self._watch_step.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._watch_step.wait(), left)
        return True

    def _load_triggers(self, values: dict[str, bytes], snapshot: bool) -> None:
        if snapshot:
            for name in set(self.triggers) - set(values):
                self._drop_trigger(name)
        for name, value in values.items():
            if not value:
                self._drop_trigger(name)
                continue
            try:
                trigger = Trigger.model_validate_json(value)
                if trigger.matches_events:
                    self.index.add(name, trigger.effective_filters(self.bus.prefix))
                else:  # schedule only: no filter at all would match every event
                    self.index.remove(name)
            except Exception as exc:  # a stored trigger this version cannot read
                log.error("trigger %s ignored: %s", name, exc)
                self.stats["triggers_unreadable"] += 1
                self._drop_trigger(name)
                continue
            self.triggers[name] = trigger
        self.triggers_changed.set()

    def _drop_trigger(self, name: str) -> None:
        self.index.remove(name)
        self.triggers.pop(name, None)

    def _load_event_schedules(self, values: dict[str, bytes], snapshot: bool) -> None:
        if snapshot:
            self.event_schedules.clear()
        for key, value in values.items():
            name = key.removeprefix(EMIT_PREFIX)
            if not value:
                self.event_schedules.pop(name, None)
                continue
            try:
                self.event_schedules[name] = EventSchedule.model_validate_json(value)
            except Exception as exc:  # a stored schedule this version cannot read
                log.error("event schedule %s ignored: %s", name, exc)
                self.event_schedules.pop(name, None)

    def _load_functions(self, values: dict[str, bytes], snapshot: bool) -> None:
        if snapshot:
            self.functions = {name for name, value in values.items() if value}
            return
        for name, value in values.items():
            (self.functions.add if value else self.functions.discard)(name)

    async def function_exists(self, name: str) -> bool:
        if name in self.functions:
            return True
        kv = await self.bus.kv(FUNCTIONS_KV)  # the watch may lag a function just created
        return await entry(kv, name) is not None
