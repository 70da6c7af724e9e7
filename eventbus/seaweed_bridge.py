"""The SeaweedFS bridge: the filer's metadata log in, one storage CloudEvent per object write out.

It subscribes to the filer's ``SubscribeMetadata`` gRPC stream under ``/buckets`` from its
resume point, turns each change into storage events (`eventbus.seaweed_changes`) and publishes
them in order. After each change's events are acknowledged by JetStream, the change's ``ts_ns``
becomes the resume point, kept in the storage-events ledger's KV bucket: after any downtime or
a SIGKILL the bridge resumes where it stopped, so no write is missed. The filer's stream is not
quite in ``ts_ns`` order under concurrent writes (a change may come a few milliseconds late),
so nothing is skipped by its time: a subscription starts a little before the resume point, and
a change seen before (the one in flight at a kill, or one replayed) has the same event id, and
the ledger's per-key order keeps it from being announced twice however late it comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from typing import Final

import grpc
import nats.errors

from eventbus.backoff import Backoff
from eventbus.buckets import BucketOwners
from eventbus.connection import Bus
from eventbus.errors import BusUnavailableError
from eventbus.publish import publish_event
from eventbus.seaweed_changes import ObjectChange, change_event, filer_changes
from eventbus.seaweed_filer_pb2 import SubscribeMetadataRequest, SubscribeMetadataResponse
from eventbus.storage.seaweedfs import BUCKETS_DIR, GRPC_OFFSET
from eventbus.storage_events import LedgerEntry, StorageLedger
from eventbus.streams import Layout
from eventbus.types import CloudEvent

log = logging.getLogger(__name__)

SUBSCRIBE: Final = "/filer_pb.SeaweedFiler/SubscribeMetadata"
#: the ledger key of the resume point (one SeaweedFS per platform: its ports may change)
CURSOR_KEY: Final = "cursor-seaweedfs"
#: on a first start, changes this many seconds old are still announced
FIRST_LOOKBACK_S: Final = 30.0
#: a subscription starts this much before the resume point (a late change is not missed; the
#: ledger knows the ones announced)
RESUME_OVERLAP_NS: Final = 5 * 10**9


def filer_grpc_target(filer: str) -> str:
    """``host:port+10000`` of a filer given as ``host:port`` (its HTTP address)."""
    host, _, port = filer.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"a SeaweedFS filer is host:port, not {filer!r}")
    return f"{host}:{int(port) + GRPC_OFFSET}"


class SeaweedBridge:
    """Announces every object write and delete of a SeaweedFS filer, exactly once each."""

    def __init__(
        self,
        bus: Bus,
        filer: str,
        *,
        ledger: StorageLedger | None = None,
        owners: BucketOwners | None = None,
        client_name: str = "deepfaas-bridge",
        cursor_every: float = 0.2,
        retry_max: float = 5.0,
    ) -> None:
        self.bus = bus
        self.target = filer_grpc_target(filer)
        self.ledger = ledger if ledger is not None else StorageLedger(bus)
        self.owners = owners if owners is not None else BucketOwners(bus)
        self.client_name = client_name
        self.cursor_every = cursor_every
        self.backoff = Backoff(0.2, retry_max)
        #: ts_ns of the last change whose events are all on the stream
        self.done_ns = 0
        #: events published (not counting those the ledger showed announced)
        self.published = 0
        self._saved_ns = 0
        self._task: asyncio.Task[None] | None = None
        self._saver: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read the resume point (a first start begins a little before now) and follow."""
        await self.ledger.ensure()
        saved = await self.ledger.cursor(CURSOR_KEY)
        if saved is None:
            saved = time.time_ns() - int(FIRST_LOOKBACK_S * 1e9)
            await self.ledger.set_cursor(CURSOR_KEY, saved)
        self.done_ns = self._saved_ns = saved
        self._task = asyncio.create_task(self._follow(), name="seaweed-bridge")
        self._saver = asyncio.create_task(self._save_loop(), name="seaweed-bridge-cursor")
        log.info("SeaweedFS bridge following %s%s from %d", self.target, BUCKETS_DIR, saved)

    async def stop(self) -> None:
        """Stop following and save the resume point."""
        for task in (self._task, self._saver):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._task = self._saver = None
        with contextlib.suppress(Exception):  # the next start replays a little more
            await self._save()

    async def _follow(self) -> None:
        attempt = 0
        while True:
            try:
                await self._follow_once()
            except asyncio.CancelledError:
                raise
            except (grpc.RpcError, nats.errors.Error, BusUnavailableError, EOFError) as exc:
                log.warning("SeaweedFS bridge: %s; resuming from %d", _short(exc), self.done_ns)
            else:
                attempt = 0
            attempt += 1
            await asyncio.sleep(self.backoff.delay(attempt))

    async def _follow_once(self) -> None:
        """One subscription from ``done_ns``, until it breaks."""
        # The blocking gRPC client reads in a thread of its own: the stream then works under
        # any event loop (grpc.aio supports only asyncio's own), and the loop only handles.
        request = SubscribeMetadataRequest(
            client_name=self.client_name,
            path_prefix=BUCKETS_DIR + "/",
            since_ns=self.done_ns - RESUME_OVERLAP_NS,
            client_id=random.randint(1, 2**31 - 1),
            client_epoch=1,
        )
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[SubscribeMetadataResponse | BaseException] = asyncio.Queue(256)
        channel = grpc.insecure_channel(self.target)
        call = channel.unary_stream(
            SUBSCRIBE,
            request_serializer=SubscribeMetadataRequest.SerializeToString,
            response_deserializer=SubscribeMetadataResponse.FromString,
        )(request)

        def pump() -> None:
            item: SubscribeMetadataResponse | BaseException
            try:
                for item in call:
                    asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()
                item = EOFError("the filer ended the stream")
            except BaseException as exc:  # handed to the loop, which raises it
                item = exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

        reader = threading.Thread(target=pump, name="seaweed-bridge-reader", daemon=True)
        reader.start()
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                await self.handle(item)
        finally:
            call.cancel()
            while not queue.empty():  # a reader blocked on a full queue goes on to its end
                queue.get_nowait()
            channel.close()

    async def handle(self, response: SubscribeMetadataResponse) -> list[CloudEvent]:
        """Announce one filer change (the ledger drops what was announced); those published."""
        if response.ts_ns < self.done_ns:
            # the filer's log is read from its files, then from memory: changes may come late
            log.info("SeaweedFS change at %d after %d", response.ts_ns, self.done_ns)
        published = []
        for change in filer_changes(response):
            event = await self.forward(change)
            if event is not None:
                published.append(event)
        self.done_ns = max(self.done_ns, response.ts_ns)
        return published

    async def forward(self, change: ObjectChange) -> CloudEvent | None:
        """Publish a change's event unless the ledger shows it (or a later one) announced."""
        namespace = await self.owners.owner(change.bucket)
        event = change_event(self.bus, change, namespace=namespace)
        last = await self.ledger.get(change.bucket, change.key)
        if last is not None and last.announced(event.id, change.ts_ns):
            log.debug("storage event %s was announced already", event.id)
            return None
        await publish_event(self.bus, event)
        self.published += 1
        etag = change.info.etag if change.info is not None else None
        entry = LedgerEntry(
            change.bucket, change.key, etag, event.id, change.time, "seaweedfs", change.ts_ns
        )
        await self.ledger.record(entry)
        return event

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cursor_every)
            try:
                await self._save()
            except (nats.errors.Error, BusUnavailableError) as exc:
                log.warning("SeaweedFS bridge: resume point not saved: %s", exc)

    async def _save(self) -> None:
        done = self.done_ns
        if done > self._saved_ns:
            await self.ledger.set_cursor(CURSOR_KEY, done)
            self._saved_ns = done


def _short(exc: BaseException) -> str:
    if isinstance(exc, grpc.Call):
        return f"filer stream {exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__


async def run_seaweed_bridge(bus: Bus, filer: str, *, layout: Layout | None = None) -> None:
    """Run the SeaweedFS bridge on ``bus`` until cancelled (its ledger declared as ``layout``
    asks)."""
    ledger = StorageLedger(bus, layout=layout)
    owners = BucketOwners(bus)  # each event carries its bucket owner's namespace
    await owners.start()
    bridge = SeaweedBridge(bus, filer, ledger=ledger, owners=owners)
    await bridge.start()
    try:
        await asyncio.Event().wait()
    finally:
        await bridge.stop()
        await owners.stop()
