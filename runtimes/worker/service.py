"""The worker process: hosts one function version, serves sync requests and async invocations.

Sync requests arrive on ``run.<function>`` (a queue group shared by the function's workers);
async invocations are pulled from the function's durable consumer on INVOCATIONS. Both kinds
claim their activation before running it (see `runtimes.activations`), so a redelivered or
replayed invocation never runs twice to completion.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from nats.aio.msg import Msg

from eventbus.codec import from_nats
from eventbus.connection import Bus
from eventbus.consume import PAUSE_S, fetch, give_back
from eventbus.errors import InvalidEventError
from eventbus.invocations import FRESH_ID
from eventbus.storage import Storage
from eventbus.storage.settings import create_storage
from eventbus.streams import consumer_name, ensure_consumer
from eventbus.subjects import ControlKind, control_subject
from eventbus.types import INVOCATIONS_STREAM, CloudEvent, invoke_subject, run_subject
from runtimes.activations import (
    ActivationStore,
    AlreadyDone,
    Busy,
    Claimed,
    ClaimResult,
    LostClaimError,
)
from runtimes.pids import pid_alive
from runtimes.settings import WorkerSettings
from runtimes.tally import CompletionTally, TallySender
from runtimes.types import ActivationRecord, ActivationStatus, Context, FunctionSpec
from runtimes.worker.callbacks import Callbacks
from runtimes.worker.executor import FunctionExecutor, Outcome
from runtimes.worker.finish import Finisher
from runtimes.worker.lease import keep_lease
from runtimes.worker.results import output_target

log = logging.getLogger(__name__)
SYNC_QUEUE = "workers"
#: a sync run that ends within this many seconds writes only its final record (no claim first)
QUICK_S = 0.1
#: how long a stopping worker waits for the runs its closed executor ends
AFTER_CLOSE_S = 5.0


class Worker:
    """Serves one function version until stopped."""

    def __init__(
        self,
        bus: Bus,
        spec: FunctionSpec,
        executor: FunctionExecutor,
        settings: WorkerSettings,
        *,
        started: float,
        storage: Storage | None = None,
        trusted: bool = False,
    ) -> None:
        self.bus = bus
        self.spec = spec
        self.settings = settings
        self.store = ActivationStore(bus)
        self.executor = executor
        #: platform code running in this process: its context carries the bus
        self.trusted = trusted
        self.started = started
        self.init_ms = (time.time() - started) * 1000
        self.cold = True
        self.inflight = 0
        self.last_busy = time.time()
        #: what it finished, for the gateways' metrics
        self.tally = CompletionTally()
        self._tally_sender = TallySender(bus, self.tally)
        self.orphaned = False
        self._slots = asyncio.Semaphore(self.spec.concurrency)
        self._tasks: set[asyncio.Task[Any]] = set()
        #: callbacks being posted (their queued invocations are acked after)
        self.callbacks = Callbacks(
            settings.egress(), tries=settings.callback_tries, renew_every=self._renew_every
        )
        self.finisher = Finisher(
            bus, self.store, spec, settings, tally=self.tally, callbacks=self.callbacks
        )
        self._stopping = asyncio.Event()
        self._sync_sub: Any = None
        self._pull_sub: Any = None
        self._loops: list[asyncio.Task[Any]] = []
        self.fn_logger = logging.getLogger(f"deepfaas.fn.{self.spec.name}")
        self.storage: Storage | None = storage  # a stem cell opens it before its assignment

    @property
    def lease(self) -> float:
        return self.settings.ack_wait_s

    @property
    def _renew_every(self) -> float:
        return max(0.05, self.lease / 3)

    async def start(self) -> None:
        """Subscribe to both paths and announce readiness."""
        name = self.spec.name
        if self.storage is None:
            try:
                self.storage = create_storage(self.settings)
            except Exception as exc:  # functions without storage still run
                log.warning("no object store for this worker: %s", exc)
        await ensure_consumer(self.bus.js, name, ack_wait=self.lease)
        self._sync_sub = await self.bus.nc.subscribe(
            run_subject(name), queue=SYNC_QUEUE, cb=self._on_sync
        )
        self._pull_sub = await self.bus.js.pull_subscribe(
            invoke_subject(name), durable=consumer_name(name), stream=INVOCATIONS_STREAM
        )
        self.init_ms = (time.time() - self.started) * 1000
        self._loops = [
            asyncio.create_task(self._pull_loop(), name="pull"),
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
        ]
        self._tally_sender.start()
        await self._announce("ready")
        log.info(
            "worker %s serving %s v%d (init %.0f ms)",
            self.settings.worker_id,
            name,
            self.spec.version,
            self.init_ms,
        )

    async def stop(self) -> None:
        """Stop taking work, finish what is in flight (bounded), release subscriptions."""
        self._stopping.set()
        if self._sync_sub is not None:
            # drain, not unsubscribe: a request already routed here (a rolling update stops
            # old workers under load) is still answered; unsubscribing would drop it and its
            # caller would wait out the whole sync wait before the safety net queued it
            with contextlib.suppress(Exception):
                await self._sync_sub.drain()
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._pull_sub is not None:
            # before the runs in flight end: what the last pull request brought and no run
            # took goes to another worker now, not after its ack wait (a rolling update's
            # queued call waited 30 s)
            given = await give_back(self._pull_sub)
            if given:
                log.info("gave %d queued invocation(s) back on stopping", given)
        if self._tasks or self.callbacks.tasks:
            pending = self._tasks | self.callbacks.tasks
            await asyncio.wait(pending, timeout=self.settings.drain_timeout_s)
        with contextlib.suppress(Exception):
            await self._announce("stopped")
        await self.executor.close()
        if self._tasks:  # runs still going past the drain timeout end with the executor
            await asyncio.wait(set(self._tasks), timeout=AFTER_CLOSE_S)
        await self._tally_sender.stop()  # last: what those runs finished is counted too
        if self.storage is not None:
            with contextlib.suppress(Exception):
                await self.storage.close()

    async def wait_stopped(self) -> None:
        """Block until `stop` is requested."""
        await self._stopping.wait()

    # -- intake ---------------------------------------------------------------------------

    async def _on_sync(self, msg: Msg) -> None:
        try:
            invocation = from_nats(msg.headers, msg.data)
        except InvalidEventError as exc:
            await msg.respond(orjson.dumps({"status": "invalid", "error": str(exc)}))
            return
        self._spawn(self._handle(invocation, reply=msg))

    async def _pull_loop(self) -> None:
        while not self._stopping.is_set():
            await self._slots.acquire()
            batch = max(1, self.spec.concurrency - len(self._tasks))
            try:
                msgs = await fetch(self._pull_sub, batch, pause=0)
            finally:
                self._slots.release()
            if msgs is None:  # the connection is recovering: pause with the slot free
                await asyncio.sleep(PAUSE_S)
                continue
            for msg in msgs:
                self._spawn(self._from_queue(msg))

    async def _from_queue(self, msg: Msg) -> None:
        try:
            invocation = from_nats(msg.headers, msg.data)
        except InvalidEventError as exc:
            log.error("dropping an invalid invocation message: %s", exc)
            await msg.term()
            return
        await self._handle(invocation, queued=msg)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- one invocation -------------------------------------------------------------------

    async def _handle(
        self, invocation: CloudEvent, *, reply: Msg | None = None, queued: Msg | None = None
    ) -> None:
        async with self._slots:
            self.inflight += 1
            self.last_busy = time.time()
            try:
                await self._claim_and_run(invocation, reply, queued)
            except Exception:
                log.exception("activation %s: unexpected failure", invocation.id)
                if queued is not None:
                    await queued.nak(delay=self.finisher.backoff(1))
            finally:
                self.inflight -= 1
                self.last_busy = time.time()

    async def _claim_and_run(
        self, invocation: CloudEvent, reply: Msg | None, queued: Msg | None
    ) -> None:
        now = datetime.now(UTC)
        mode = str(invocation.extensions.get("mode", "sync" if reply else "async"))
        record = ActivationRecord(
            id=invocation.id,
            function=self.spec.name,
            version=self.spec.version,
            status=ActivationStatus.RUNNING,
            mode=mode,
            accepted=invocation.time,
            start=now,
            wait_ms=_ms_between(invocation.time, now),
            cause=_str_or_none(invocation.extensions.get("causeid")),
            worker=self.settings.worker_id,
        )
        if _fresh(invocation, mode, reply, queued):
            # An id the gateway made, on its first delivery: nothing else holds it. Claim
            # while it runs, or, when the run ends first, not at all (`_claim_unless_quick`).
            ended: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            pending = asyncio.create_task(self._claim_unless_quick(record, ended))
            await self._run(invocation, pending, mode, reply, queued, ended=ended)
            return
        if reply is not None:
            # A sync request with a given id (a sequence's step): claim while it runs.
            pending = asyncio.create_task(self.store.claim(record, lease=self.lease))
            await self._run(invocation, pending, mode, reply, queued)
            return
        claim = await self.store.claim(record, lease=self.lease)
        if not isinstance(claim, Claimed):
            await self.finisher.settle_duplicate(claim, invocation, reply, queued)
            return
        if claim.record.attempts > self.spec.max_attempts:
            lost = claim.record.model_copy(
                update={
                    "status": ActivationStatus.ERROR,
                    "end": now,
                    "error": "the worker running it was lost on every try",
                }
            )
            await self.finisher.complete(
                claim, lost, invocation, reply, queued, dead=mode == "async"
            )
            return
        await self._run(invocation, claim, mode, reply, queued)

    async def _claim_unless_quick(
        self, record: ActivationRecord, ended: asyncio.Future[bool]
    ) -> ClaimResult:
        """The claim of a fresh run (`_fresh`), written only if it is still going after `QUICK_S`.

        A run that ends first is "claimed" at revision 0: its final record is then created
        with compare-and-set on no earlier record (one JetStream round trip before the reply
        instead of two), and loses to any claim another worker wrote meanwhile, as a claimed
        run does. The trade-off: for its first `QUICK_S` such a run has no `running` record.
        """
        # a timer and a future, not wait_for: this runs once per quick activation
        timer = asyncio.get_running_loop().call_later(QUICK_S, _settle, ended, False)
        try:
            if await ended:
                return Claimed(record, 0)
        finally:
            timer.cancel()
        return await self.store.claim(record, lease=self.lease)

    async def _run(
        self,
        invocation: CloudEvent,
        claim_source: Claimed | asyncio.Task[ClaimResult],
        mode: str,
        reply: Msg | None,
        queued: Msg | None,
        *,
        ended: asyncio.Future[bool] | None = None,
    ) -> None:
        cold = self.cold
        self.cold = False
        attempt = claim_source.record.attempts if isinstance(claim_source, Claimed) else 1
        ctx = Context(
            activation_id=invocation.id,
            function=self.spec.name,
            version=self.spec.version,
            deadline=time.time() + self.spec.timeout_s,
            logger=self.fn_logger,
            event=invocation,
            attempt=attempt,
            storage=self.storage,
            output=output_target(invocation),
            bus=self.bus if self.trusted else None,
        )
        run = asyncio.create_task(
            self.executor.run(invocation.data or b"", invocation.datacontenttype, ctx)
        )
        if ended is not None:
            run.add_done_callback(lambda _: _settle(ended, True))
        holder: list[ClaimResult] = []
        keepers: list[asyncio.Task[None]] = []

        def keep(_: object = None, due: bool = False) -> None:
            # a fresh run's claim ends after a quick run: no lease to keep, no task for it
            if not keepers and not run.done():
                keeper = keep_lease(
                    self.store,
                    claim_source,
                    holder,
                    queued,
                    run,
                    lease=self.lease,
                    every=self._renew_every,
                    due=due,
                )
                keepers.append(asyncio.create_task(keeper))

        late: asyncio.TimerHandle | None = None
        if isinstance(claim_source, asyncio.Task):
            claim_source.add_done_callback(keep)
        else:
            # a claimed run: its first renewal is due after `_renew_every`; a quick run ends
            # before, with neither a task nor a sleep for its lease
            late = asyncio.get_running_loop().call_later(self._renew_every, keep, None, True)
        outcome: Outcome | None = None
        try:
            outcome = await run
        except asyncio.CancelledError:
            if not any(k.done() and not k.cancelled() and k.exception() for k in keepers):
                raise
        finally:
            if late is not None:
                late.cancel()
            if isinstance(claim_source, asyncio.Task):
                with contextlib.suppress(Exception):
                    await asyncio.shield(claim_source)  # known before anything is written
            for keeper in keepers:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError, LostClaimError):
                    await keeper
        if not holder and isinstance(claim_source, asyncio.Task):
            holder.append(claim_source.result())
        claim = holder[0] if holder else claim_source
        if not isinstance(claim, Claimed):
            if isinstance(claim, AlreadyDone | Busy):
                await self.finisher.settle_duplicate(claim, invocation, reply, queued)
            return
        if outcome is None:
            return  # another worker took the activation over; it answers
        final = await self.finisher.final_record(
            claim, outcome, ctx, self.storage, cold=cold, init_ms=self.init_ms
        )
        # Only async invocations retry and dead-letter: a sync caller is answered either way.
        is_async = queued is not None and mode == "async"
        if (
            queued is not None
            and outcome.retryable
            and is_async
            and final.attempts < self.spec.max_attempts
        ):
            retrying = final.model_copy(update={"status": ActivationStatus.RETRYING})
            try:
                await self.store.finish(claim, retrying)
            except LostClaimError:
                return
            delay = self.finisher.backoff(final.attempts)
            log.warning(
                "activation %s failed (try %d of %d), retrying in %.1f s: %s",
                final.id,
                final.attempts,
                self.spec.max_attempts,
                delay,
                final.error,
            )
            await queued.nak(delay=delay)
            return
        dead = is_async and final.status is not ActivationStatus.SUCCESS
        await self.finisher.complete(claim, final, invocation, reply, queued, dead=dead)

    async def _heartbeat_loop(self) -> None:
        while not self._stopping.is_set():
            await self._announce("heartbeat")
            if self.executor.abandoned > self.spec.concurrency:
                log.error("too many timed-out runs still hold threads; restarting this worker")
                self._stopping.set()
                return
            parent = self.settings.parent_pid
            # a forked worker's parent is the fork server: the provider only has to live
            if parent is not None and os.getppid() != parent and not pid_alive(parent):
                log.warning("the process that started this worker is gone; stopping")
                self.orphaned = True
                self._stopping.set()
                return
            await asyncio.sleep(self.settings.heartbeat_s)

    async def _announce(self, kind: ControlKind) -> None:
        body = {
            "worker": self.settings.worker_id,
            "pid": os.getpid(),
            "function": self.spec.name,
            "version": self.spec.version,
            "inflight": self.inflight,
            "capacity": self.spec.concurrency,
            "completed": self.finisher.completed,
            "idle_s": 0.0 if self.inflight else round(time.time() - self.last_busy, 3),
            "init_ms": round(self.init_ms, 3),
        }
        with contextlib.suppress(Exception):
            await self.bus.nc.publish(control_subject(kind, self.spec.name), orjson.dumps(body))


def _fresh(invocation: CloudEvent, mode: str, reply: Msg | None, queued: Msg | None) -> bool:
    """Whether nothing but this run can hold the activation: an id the gateway made (sync or
    async, not the safety net's queued copy of a sync call), on its first delivery."""
    if invocation.extensions.get(FRESH_ID) not in (True, "true"):
        return False
    if reply is not None:
        return True
    return queued is not None and mode == "async" and queued.metadata.num_delivered == 1


def _settle(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


def _ms_between(earlier: datetime | None, later: datetime) -> float | None:
    if earlier is None:
        return None
    return round((later - earlier).total_seconds() * 1000, 3)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
