"""The deliverer: pushes matching events from EVENTS to every enabled subscription's sink.

Each subscription gets its own durable pull consumer on EVENTS (``sub-<id>``), starting at the
subscription's creation time, so one slow or failing sink never holds up another, and its
retries are JetStream redeliveries: ``nak(delay)`` with exponential backoff, the try number
being the message's delivery count. After the last try the event is dead-lettered (kind
``delivery``, target = subscription id) and acked. Several deliverer processes may run: they
share each consumer. HTTP sinks get the event in CloudEvents HTTP binary mode; 2xx is
delivered, 408, 429, 5xx and transport errors are retried (``Retry-After`` is honoured up to
the backoff cap), any other status fails at once. NATS sinks get a core NATS publish in binary
mode with ``Nats-Msg-Id`` = event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import httpx
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError as JsNotFoundError

from eventbus.backoff import Backoff
from eventbus.codec import from_nats, to_nats
from eventbus.connection import Bus
from eventbus.consume import fetch, give_back
from eventbus.dlq import dead_letter
from eventbus.egress import EgressPolicy, EgressRefusedError, UnresolvedHostError
from eventbus.errors import InvalidEventError, NotFoundError
from eventbus.http_codec import to_http
from eventbus.publish import MSG_ID_HEADER
from eventbus.streams import SUBSCRIPTIONS_KV
from eventbus.subscriptions import (
    Matcher,
    Subscription,
    SubscriptionStore,
    consumer_name,
    nats_sink_subject,
    sink_problem,
    subject_filter,
    sync_consumer_subjects,
)
from eventbus.types import EVENTS_STREAM, CloudEvent

log = logging.getLogger(__name__)
RETRYABLE_STATUS = frozenset({408, 429})


@dataclass(frozen=True)
class Outcome:
    """How one delivery attempt went."""

    ok: bool
    retryable: bool = False
    error: str | None = None
    retry_after: float | None = None


@dataclass
class _Feed:
    subscription: Subscription
    matches: Matcher
    task: asyncio.Task[None] | None = None
    inflight: set[asyncio.Task[None]] = field(default_factory=set)


class Deliverer:
    """Delivers events to the sinks of every enabled subscription, following the KV bucket."""

    def __init__(
        self,
        bus: Bus,
        *,
        ack_wait: float = 30.0,
        base_delay: float = 1.0,
        max_delay: float = 60.0,
        batch: int = 16,
        egress: EgressPolicy | None = None,
    ) -> None:
        self.bus = bus
        #: where webhook sinks may be (global addresses only, unless it allows more)
        self.egress = egress or EgressPolicy()
        self.ack_wait = ack_wait
        self.backoff = Backoff(base_delay, max_delay)
        self.batch = batch
        self._feeds: dict[str, _Feed] = {}
        self.store = SubscriptionStore(bus)
        self._synced = asyncio.Event()
        self._watch_task: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        """Load every subscription, start its feed, then follow changes."""
        self._http = httpx.AsyncClient(follow_redirects=False)
        self._watch_task = asyncio.create_task(self._watch(), name="subscriptions-watch")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._synced.wait(), 10)

    async def stop(self) -> None:
        """Stop every feed (unacked events are redelivered later) and close the HTTP client."""
        if self._watch_task is not None:
            self._watch_task.cancel()
            await asyncio.gather(self._watch_task, return_exceptions=True)
        for feed in list(self._feeds.values()):
            await self._stop_feed(feed)
        self._feeds.clear()
        if self._http is not None:
            await self._http.aclose()

    def active(self) -> dict[str, Subscription]:
        """The subscriptions this deliverer is feeding now (enabled ones), by id."""
        return {k: f.subscription for k, f in self._feeds.items() if f.task is not None}

    # -- following the subscriptions ----------------------------------------------------

    async def _watch(self) -> None:
        kv = await self.bus.kv(SUBSCRIPTIONS_KV)
        while True:
            watcher: Any = None
            try:
                watcher = await kv.watchall()
                async for entry in watcher:
                    if entry is None:
                        self._synced.set()
                    elif entry.operation in ("DEL", "PURGE") or not entry.value:
                        await self._remove(entry.key)
                    else:
                        await self._apply(entry.key, entry.value)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("subscription watch ended (%s); watching again", exc)
                await asyncio.sleep(0.5)
            finally:
                if watcher is not None:
                    with contextlib.suppress(Exception):
                        await watcher.stop()

    async def _apply(self, key: str, value: bytes) -> None:
        try:
            subscription = Subscription.model_validate_json(value)
            matches = subscription.matcher()
        except Exception as exc:  # written by an older or newer version, or by hand
            log.error("subscription %s cannot be read; not delivering it: %s", key, exc)
            await self._remove(key, delete_consumer=False)
            return
        feed = self._feeds.get(key)
        if feed is None:
            feed = self._feeds[key] = _Feed(subscription, matches)
        else:
            feed.subscription, feed.matches = subscription, matches
            # replaced: the store updated its consumer as it answered, unless that failed
            await self._sync_subjects(subscription)
        if subscription.enabled and feed.task is None:
            feed.task = asyncio.create_task(self._run(feed), name=f"feed-{key}")
        elif not subscription.enabled and feed.task is not None:
            await self._stop_feed(feed)  # paused: its consumer keeps the events meanwhile

    async def _remove(self, key: str, *, delete_consumer: bool = True) -> None:
        feed = self._feeds.pop(key, None)
        if feed is not None:
            await self._stop_feed(feed)
        if delete_consumer:
            with contextlib.suppress(JsNotFoundError):
                await self.bus.js.delete_consumer(EVENTS_STREAM, consumer_name(key))

    async def _stop_feed(self, feed: _Feed) -> None:
        tasks = [t for t in (feed.task, *feed.inflight) if t is not None]
        feed.task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _ensure_consumer(self, subscription: Subscription) -> None:
        # one made before (by an earlier version, or before a replacement) reads what the
        # subscription wants now; one that cannot be changed is read as it is
        if await self._sync_subjects(subscription) is not False:
            return
        name = consumer_name(subscription.key)
        start = subscription.created
        config = ConsumerConfig(
            durable_name=name,
            deliver_policy=DeliverPolicy.BY_START_TIME if start else DeliverPolicy.NEW,
            opt_start_time=start,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=-1,
            max_ack_pending=max(self.batch * 4, 256),
            **subject_filter(subscription.event_subjects(self.bus.prefix)),
        )
        await self.bus.js.add_consumer(EVENTS_STREAM, config)

    async def _sync_subjects(self, subscription: Subscription) -> bool | None:
        """`sync_consumer_subjects`; None (logged) when it failed."""
        try:
            return await sync_consumer_subjects(self.bus, subscription)
        except Exception as exc:  # its next bind (or replacement) tries again
            log.warning(
                "subscription %s: consumer's filter not updated (%s)", subscription.key, exc
            )
            return None

    async def _run(self, feed: _Feed) -> None:
        key = feed.subscription.key
        psub: Any = None
        try:
            while True:
                if psub is None:
                    try:
                        if not await self._still_there(key):
                            return  # deleted: do not bring its consumer back; the watch cleans up
                        await self._ensure_consumer(feed.subscription)
                        psub = await self.bus.js.pull_subscribe_bind(
                            durable=consumer_name(key), stream=EVENTS_STREAM
                        )
                    except Exception as exc:
                        log.warning("subscription %s: consumer not ready (%s)", key, exc)
                        await asyncio.sleep(0.5)
                        continue
                msgs = await fetch(psub, self.batch)
                if msgs is None:  # consumer deleted under us, or the connection lost: bind again
                    with contextlib.suppress(Exception):
                        await psub.unsubscribe()
                    psub = None
                    continue
                tasks = [asyncio.create_task(self._handle(feed, msg)) for msg in msgs]
                feed.inflight.update(tasks)
                await asyncio.gather(*tasks, return_exceptions=True)
                feed.inflight.difference_update(tasks)
        finally:
            if psub is not None:
                await give_back(psub)  # what came and was not handled: redelivered now

    async def _still_there(self, key: str) -> bool:
        try:
            await self.store.get(key)
        except NotFoundError:
            return False
        return True

    # -- one event ------------------------------------------------------------------------

    async def _handle(self, feed: _Feed, msg: Msg) -> None:
        subscription = feed.subscription
        sid = subscription.key
        try:
            event = from_nats(msg.headers, msg.data)
        except InvalidEventError as exc:
            log.warning("subscription %s: skipping a message that is no CloudEvent: %s", sid, exc)
            await msg.term()
            return
        try:
            wanted = feed.matches(event)
        except Exception:
            log.exception("subscription %s: filter failed on event %s; skipping", sid, event.id)
            wanted = False
        if not wanted:
            await msg.ack()
            return
        attempt = msg.metadata.num_delivered
        tries = subscription.config.max_tries
        try:
            keeper = asyncio.create_task(self._keep_alive(msg))
            try:
                outcome = await self._send(subscription, event)
            finally:
                keeper.cancel()
            retry = not outcome.ok and outcome.retryable and attempt < tries
            if outcome.ok:
                await msg.ack()
                log.debug("subscription %s: delivered %s (try %d)", sid, event.id, attempt)
            elif retry:
                delay = self._delay(subscription, attempt, outcome.retry_after)
                log.info(
                    "subscription %s: event %s failed (try %d of %d), retrying in %.2f s: %s",
                    *(sid, event.id, attempt, tries, delay, outcome.error),
                )
                await msg.nak(delay=delay)
            else:
                await dead_letter(
                    self.bus,
                    kind="delivery",
                    target=sid,
                    event=event,
                    error=outcome.error or "delivery failed",
                    attempts=attempt,
                )
                await msg.ack()
            if sid in self._feeds:  # not deleted meanwhile: leave no state behind
                await self.store.record_attempt(
                    sid,
                    event.id,
                    ok=outcome.ok,
                    error=outcome.error,
                    dead=not (outcome.ok or retry),
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the bus failed us mid-way: try again later
            log.warning("subscription %s: event %s not settled: %s", sid, event.id, exc)
            with contextlib.suppress(Exception):
                await msg.nak(delay=self._delay(subscription, attempt, None))

    async def _keep_alive(self, msg: Msg) -> None:
        while True:
            await asyncio.sleep(max(0.05, self.ack_wait / 3))
            with contextlib.suppress(Exception):
                await msg.in_progress()

    def _delay(self, subscription: Subscription, attempt: int, retry_after: float | None) -> float:
        config = subscription.config
        backoff = Backoff(
            self.backoff.base if config.backoff_base_s is None else config.backoff_base_s,
            self.backoff.cap if config.backoff_max_s is None else config.backoff_max_s,
        )
        delay = backoff.delay(attempt)
        if retry_after is not None:
            delay = max(delay, min(backoff.cap, retry_after))
        return float(delay)

    async def _send(self, subscription: Subscription, event: CloudEvent) -> Outcome:
        try:
            if subscription.protocol == "NATS":
                return await self._send_nats(subscription, event)
            return await self._send_http(subscription, event)
        except InvalidEventError as exc:  # the event cannot be put in this binding
            return Outcome(ok=False, error=f"cannot encode the event: {exc}")

    async def _send_http(self, subscription: Subscription, event: CloudEvent) -> Outcome:
        assert self._http is not None, "start() first"
        ce_headers, body = to_http(event)
        settings = subscription.protocolsettings
        try:
            target = await self.egress.pin(subscription.sink)
        except EgressRefusedError as exc:  # the operator's rule: another try changes nothing
            return Outcome(ok=False, error=str(exc))
        except UnresolvedHostError as exc:  # DNS may answer the next try
            return Outcome(ok=False, retryable=True, error=str(exc))
        headers = {**settings.headers, **ce_headers, **target.headers}
        try:
            # the whole exchange, not each read: a sink that drips bytes holds the event no longer
            async with asyncio.timeout(subscription.config.timeout_s):
                async with self._http.stream(
                    settings.method,
                    target.url,
                    content=body,
                    headers=headers,
                    timeout=subscription.config.timeout_s,
                    extensions=target.extensions,
                ) as response:
                    if response.is_success:
                        return Outcome(ok=True)
                    text = await _read_some(response)
        except (httpx.HTTPError, OSError) as exc:  # TimeoutError included
            return Outcome(ok=False, retryable=True, error=f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a request httpx cannot make: another try changes nothing
            return Outcome(ok=False, error=f"cannot send: {type(exc).__name__}: {exc}")
        status = response.status_code
        error = f"HTTP {status} {response.reason_phrase}" + (f": {text}" if text else "")
        retryable = status in RETRYABLE_STATUS or status >= 500
        return Outcome(
            ok=False,
            retryable=retryable,
            error=error,
            retry_after=_retry_after(response.headers.get("retry-after")),
        )

    async def _send_nats(self, subscription: Subscription, event: CloudEvent) -> Outcome:
        problem = sink_problem(subscription.namespace, subscription.sink)
        if problem is not None:  # stored before the rule, or by hand: never publish there
            return Outcome(ok=False, error=problem)
        ce_headers, body = to_nats(event)
        headers = {**subscription.protocolsettings.headers, **ce_headers, MSG_ID_HEADER: event.id}
        try:
            await self.bus.nc.publish(nats_sink_subject(subscription.sink), body, headers=headers)
            await self.bus.nc.flush(timeout=5)
        except Exception as exc:  # disconnected, or the flush timed out
            return Outcome(ok=False, retryable=True, error=f"{type(exc).__name__}: {exc}")
        return Outcome(ok=True)


async def _read_some(response: httpx.Response, limit: int = 200) -> str:
    """The start of an error response's body, for the error message."""
    chunk = b""
    with contextlib.suppress(httpx.HTTPError):
        async for part in response.aiter_bytes():
            chunk += part
            if len(chunk) >= limit:
                break
    return chunk[:limit].decode("utf-8", "replace").strip()


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header in its delay-seconds form (dates are ignored)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
