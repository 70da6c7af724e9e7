"""Pulling batches from a durable consumer, the same way in every long-running consumer.

Each fetch is one pull request that ends on the server: ``no_wait`` with ``expires`` asks for
up to ``batch`` messages, waits up to ``timeout`` for the first, sends what is there then and
ends with a status (``404``), or ends with ``408`` when nothing came. A fetch returns as soon as
its request has ended, so a message is handed over the moment it arrives (at most a few
milliseconds later when the consumer is at its ``max_ack_pending``, which keeps such a request
open). A request ended at once with a ``408`` (``Requests Pending``: another subscriber's
request waits already) makes the fetch pause before it returns, not its caller spin.

nats-py's own ``fetch`` sends, when its first request finds nothing, a second one without
``no_wait`` that stays open on the server after the fetch returns: the messages that open
request takes later do not end the next fetch, which then holds each one until another
arrives or its timeout runs out (an async invocation or a triggered event on a quiet platform
started 100 ms to 1 s late: `tests/eventbus/test_consume.py`). It also takes every message
of a batch through ``next_msg``, two tasks and a uuid each, even when it is queued already.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
import weakref
from collections.abc import AsyncGenerator
from typing import Any, Final

import orjson
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from eventbus.errors import BusUnavailableError

log = logging.getLogger(__name__)
#: seconds to wait after a failed fetch, while the client reconnects
PAUSE_S = 0.2
#: how much longer than its request a fetch waits for the server's word that it ended
GRACE_S: Final = 0.5
#: how long a fetch that has messages waits for the server to end its request
AFTER_FIRST_S: Final = 0.005
#: how long a fetch whose request a 408 ended early, with nothing, waits before it returns
EARLY_END_PAUSE_S: Final = 0.05
#: the shortest pull request asked for (1 ms)
MIN_EXPIRES_NS: Final = 1_000_000
#: how long a snapshot waits for messages the server said it holds
SNAPSHOT_WAIT_S: Final = 2.0
SNAPSHOT_BATCH: Final = 256
#: a stopping puller takes the open request's messages while they keep coming this often
SETTLE_QUIET_S: Final = 0.05
#: and for this long at most
SETTLE_MAX_S: Final = 1.0
#: how long a snapshot waits for the next message before it asks the consumer what is left
SNAPSHOT_CHECK_S: Final = 0.2
#: how long a snapshot's consumer outlives a reader that died before deleting it
SNAPSHOT_IDLE_S: Final = 30.0
#: how long `give_back` waits for the server to take its unsubscribe (and the flush)
FLUSH_S: Final = 1.0
#: the statuses that end a pull request with nothing wrong: no messages (left), expired
_ENDED: Final = ("404", "408")
#: a subscription's pull requests that `fetch` sent and saw no end of: [how many, the loop
#: time by which the last of them has surely ended]
_OPEN: weakref.WeakKeyDictionary[Any, list[float]] = weakref.WeakKeyDictionary()
#: a heartbeat or a flow-control message: not an end
_INFORMATIVE: Final = "100"


async def fetch(
    sub: Any, batch: int, *, timeout: float = 1.0, pause: float = PAUSE_S
) -> list[Msg] | None:
    """Up to ``batch`` messages, none when nothing came within ``timeout``; None when the
    fetch failed (the connection is recovering, or the consumer is gone), after ``pause``
    seconds. ``sub`` is a nats-py pull subscription."""
    inner: Any = sub._sub
    nc: Any = sub._nc
    queue: asyncio.Queue[Msg] = inner._pending_queue
    msgs: list[Msg] = []
    while len(msgs) < batch and not queue.empty():  # delivered already, e.g. after an error
        msg = _take(inner, queue.get_nowait())
        if _status(msg) is None:
            msgs.append(msg)
        else:
            _ended(sub, msg)
    if msgs:
        return msgs
    if nc.is_closed:
        await asyncio.sleep(pause)
        return None
    # the server expires a request of a microsecond before it sends what is waiting
    request = {"batch": batch, "expires": max(MIN_EXPIRES_NS, int(timeout * 1e9)), "no_wait": True}
    try:
        await nc.publish(sub._nms, orjson.dumps(request), reply=sub._deliver)
    except Exception as exc:  # connection loss: the client reconnects by itself
        log.debug("fetch failed: %s", exc)
        await asyncio.sleep(pause)
        return None
    loop = asyncio.get_running_loop()
    expires = loop.time() + timeout
    deadline = expires + GRACE_S
    _opened(sub, deadline)
    ended: Msg | None = None  # the server's status that ended the request
    while len(msgs) < batch:
        if queue.empty():
            # Once something came, the rest comes with it: wait briefly for the server's end
            # (a consumer at its max_ack_pending keeps such a request open until it expires).
            left = min(deadline, loop.time() + AFTER_FIRST_S) if msgs else deadline
            left -= loop.time()
            if left <= 0:
                break  # the server did not answer: what came is all there is
            try:
                async with asyncio.timeout(left):  # not wait_for: it can swallow a cancel
                    got = await queue.get()
            except TimeoutError:
                break
            except asyncio.CancelledError:
                for taken in msgs:  # queued again, for the next fetch or `give_back`
                    _put_back(inner, taken)
                raise
        else:
            got = queue.get_nowait()
        msg = _take(inner, got)
        status = _status(msg)
        if status is None:
            msgs.append(msg)
        elif status != _INFORMATIVE:
            ended = msg
            _ended(sub, msg)
            break
    if ended is None and len(msgs) >= batch:
        _ended(sub, None)  # a request served in full ends with no word
    status = None if ended is None else _status(ended)
    if ended is not None and status not in _ENDED and not msgs:
        # 409: the consumer deleted, too many requests waiting, a leader change
        log.debug("fetch failed: %s %s", status, (ended.headers or {}).get("Description", ""))
        await asyncio.sleep(pause)
        return None
    if not msgs and status == "408" and loop.time() < expires:
        # A 408 before the request expired: "Requests Pending" (another subscriber's request
        # waits on this consumer at its max_ack_pending; asked again at once, the same answer
        # in a tight loop), or an earlier request's, after an idle wait. (An earlier request's
        # 404, after its messages, ends this fetch early once: asked again, this one's answers.)
        await asyncio.sleep(min(EARLY_END_PAUSE_S, expires - loop.time()))
    return msgs


async def give_back(sub: Any) -> int:
    """Unsubscribe a pull subscription that `fetch` read; the messages delivered to it and
    not fetched (an open request's, a cancelled fetch's) go back to the consumer at once, not
    after their ack wait. How many went back.

    On one server, the unsubscribe is enough: once a flush has come back, everything sent
    before is queued here, and the server serves no request of a subscription it no longer
    has. In a cluster the server that holds the consumer learns of the unsubscribe later, and
    sends what comes meanwhile to no one; so there a request `fetch` saw no end of is waited
    for first (its end, or its expiry: at most `fetch`'s timeout and `GRACE_S`).
    """
    inner: Any = sub._sub
    nc: Any = sub._nc
    queue: asyncio.Queue[Msg] = inner._pending_queue
    left: list[Msg] = []

    def note(msg: Msg) -> None:
        if _status(msg) is None:
            left.append(msg)
        else:
            _ended(sub, msg)

    def drain() -> None:
        while not queue.empty():
            note(_take(inner, queue.get_nowait()))

    drain()
    loop = asyncio.get_running_loop()
    while _clustered(nc) and nc.is_connected:
        count, until = _OPEN.get(sub, (0, 0.0))
        if count <= 0 or loop.time() >= until:
            break
        try:
            async with asyncio.timeout(until - loop.time()):
                got = await queue.get()
        except TimeoutError:
            break
        note(_take(inner, got))
        drain()
    _OPEN.pop(sub, None)
    await _unsubscribe_on_server(nc, inner._id)
    drain()
    with contextlib.suppress(Exception):
        await sub.unsubscribe()
    await nak_all(left)
    return len(left)


async def _unsubscribe_on_server(nc: Any, sid: int) -> None:
    """The server stops routing to a subscription, which stays here: once the flush is
    back, all it sent before is queued (nats-py's own unsubscribe forgets the subscription at
    once, and what is still on the wire would be dropped and come back after its ack wait)."""
    if not nc.is_connected:
        return
    with contextlib.suppress(Exception):
        await nc._send_unsubscribe(sid)
        await nc.flush(timeout=FLUSH_S)


async def nak_all(msgs: list[Msg]) -> None:
    """Give fetched messages back at once (a batch in hand when its reader is cancelled)."""
    with contextlib.suppress(Exception):
        await asyncio.gather(*(msg.nak() for msg in msgs))


async def fetch_batch(
    sub: Any, batch: int, *, timeout: float = 1.0, pause: float = PAUSE_S
) -> list[Msg]:
    """Up to ``batch`` messages; none when nothing waits, or while the connection recovers."""
    return await fetch(sub, batch, timeout=timeout, pause=pause) or []


class Puller:
    """A durable pull consumer read continuously: one pull request stays open on the server
    and takes each message the moment it is stored, for as long as the request lasts (up to
    ``batch`` messages or ``expires`` seconds); the next is asked for when it ends.

    `fetch` asks once per call and the server ends each request with a status: per message
    on a quiet consumer, a request and a status beside the message and its ack. Here a busy
    consumer costs the server one request per ``batch`` messages. Each request has a reply
    subject of its own (``<inbox>.<n>``), so the server's word that one ended (a status, sent
    on that subject) is never taken for the end of another; a request that the server lost (a
    restart, a new consumer leader) is replaced once it is ``GRACE_S`` past its expiry with no
    word.
    """

    def __init__(
        self,
        nc: Any,
        stream: str,
        durable: str,
        *,
        batch: int = 256,
        expires: float = 1.0,
        acks: bool = True,
    ) -> None:
        self.nc = nc
        self.batch = batch
        self.expires = expires
        #: whether its messages are acknowledged (a stop gives back what it did not hand over)
        self.acks = acks
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = ""
        self._sub: Any = None
        #: stream messages taken off the subscription's queue, not handed over yet
        self._ready: collections.deque[Msg] = collections.deque()
        self._serial = 0
        #: the open request: its number, how many messages it still owes, when to give up on
        #: it (number 0: none open, the next is asked for at that time)
        self._open: tuple[int, int, float] | None = None

    async def start(self) -> None:
        """Subscribe to the requests' replies (nats-py resubscribes after a reconnect)."""
        self._inbox = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(f"{self._inbox}.*")

    async def stop(self) -> None:
        """Unsubscribe (the server drops the open request then); messages delivered but not
        handed over go back to the consumer at once, not after their ack wait."""
        if self._sub is None:
            return
        if self.acks and not self.nc.is_closed:
            await self._settle()
        await _unsubscribe_on_server(self.nc, self._sub._id)
        self._drain()  # all the open request sent: taken here and given back
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()
        self._sub = None
        left = list(self._ready)
        self._ready.clear()
        if self.acks:
            await nak_all(left)

    async def _settle(self) -> None:
        """Before unsubscribing, let the open request's messages already on their way arrive.

        The server goes on sending a request's messages until it sees the unsubscribe, and
        those it sends after are delivered to no one: they would come back only after their
        ack wait (a CI run's stop in the middle of a backlog's burst kept some 130 so). Taken
        while they still come (until `SETTLE_QUIET_S` passes with none, or the request owes
        nothing), they are given back at once with the rest. In a cluster the server holding
        the consumer learns of the unsubscribe late (`give_back`): there the open request is
        waited for until it ends or is given up (its expiry and `GRACE_S`).
        """
        loop = asyncio.get_running_loop()
        clustered = _clustered(self.nc)
        deadline = loop.time() + SETTLE_MAX_S
        queue: asyncio.Queue[Msg] = self._sub._pending_queue
        while self._open is not None and self._open[0] > 0 and self._open[1] > 0:
            self._drain()
            if self._open is None:
                return
            if clustered:
                left = self._open[2] - loop.time()
            else:
                left = min(SETTLE_QUIET_S, deadline - loop.time())
            if left <= 0:
                return
            try:
                async with asyncio.timeout(left):
                    got = await queue.get()
            except TimeoutError:
                return  # quiet: nothing more was on its way
            self._note(_take(self._sub, got))

    async def take(self, limit: int, *, timeout: float) -> list[Msg]:
        """Up to ``limit`` messages: those waiting now, else the first to come within
        ``timeout`` seconds (none if none came) with any that came with it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        queue: asyncio.Queue[Msg] = self._sub._pending_queue
        self._drain()
        while not self._ready:
            await self._ask(loop.time())
            self._drain()
            if self._ready:
                break
            give_up = self._open[2] if self._open is not None else deadline
            left = min(deadline, give_up) - loop.time()
            if left <= 0:
                if self._open is not None and loop.time() >= give_up:
                    self._open = None  # no word from the server: it lost the request
                if loop.time() >= deadline:
                    return []
                continue
            try:
                async with asyncio.timeout(left):  # not wait_for: it can swallow a cancel
                    got = await queue.get()
            except TimeoutError:
                continue
            self._note(_take(self._sub, got))
            self._drain()
        if len(self._ready) <= limit:
            # the next request before handing over (a cancel past here loses nothing), and
            # only when nothing is left over: a dispatcher holds one request's worth at most
            await self._ask(loop.time())
        return [self._ready.popleft() for _ in range(min(limit, len(self._ready)))]

    async def _ask(self, now: float) -> None:
        """Send the next request unless one is open (or the connection is closed)."""
        if self._open is not None or self.nc.is_closed:
            if self.nc.is_closed:
                await asyncio.sleep(PAUSE_S)
            return
        self._serial += 1
        request = {"batch": self.batch, "expires": int(self.expires * 1e9)}
        self._open = (self._serial, self.batch, now + self.expires + GRACE_S)
        try:
            await self.nc.publish(
                self._next_subject, orjson.dumps(request), reply=f"{self._inbox}.{self._serial}"
            )
        except Exception as exc:  # connection loss: the client reconnects by itself
            log.debug("pull request not sent: %s", exc)
            self._open = (0, 0, now + PAUSE_S)  # asked again after a pause

    def _drain(self) -> None:
        """Take everything the subscription has queued (no task, no wait per message)."""
        queue: asyncio.Queue[Msg] = self._sub._pending_queue
        while not queue.empty():
            self._note(_take(self._sub, queue.get_nowait()))

    def _note(self, msg: Msg) -> None:
        status = _status(msg)
        if status is None:  # a stream message keeps its own subject: counted to the open one
            self._ready.append(msg)
            if self._open is not None and self._open[0] > 0:
                number, owed, give_up = self._open
                self._open = (number, owed - 1, give_up) if owed > 1 else None
            return
        token = msg.subject.rpartition(".")[2]  # the server's word comes on the reply subject
        if status == _INFORMATIVE or self._open is None or token != str(self._open[0]):
            return  # a heartbeat, or the end of a request given up on already
        self._open = None
        if status not in _ENDED:  # 409: the consumer deleted, a leader change, ...
            log.debug("pull request ended: %s %s", status,
                      (msg.headers or {}).get("Description", ""))  # fmt: skip
            # the next request waits a moment: asked again at once, the same answer
            self._open = (0, 0, asyncio.get_running_loop().time() + PAUSE_S)


async def snapshot(
    nc: Any, js: Any, stream: str, config: ConsumerConfig, *, wait: float = SNAPSHOT_WAIT_S
) -> AsyncGenerator[list[Msg], None]:
    """Batches of what a consumer of ``config`` (what to read: its filter and where to start)
    holds when it is made, read once through a consumer of this call's own (a name, no acks,
    in memory, gone after `SNAPSHOT_IDLE_S` if this reader dies first) deleted after (use
    with `contextlib.aclosing` when the reader may stop early).

    The count comes with the consumer's creation, before anything is delivered: nothing is
    missed or taken for the end of the stream (nats-py's `KeyValue.keys` read it from a push
    consumer already delivering, and now and then found an empty bucket in a full one). The
    server holding messages it does not send (a restart mid-read) is `BusUnavailableError`,
    never a short answer; messages removed meanwhile end the read (within `SNAPSHOT_CHECK_S`).
    """
    name = f"snapshot-{uuid.uuid4().hex}"
    config = config.evolve(
        name=name, ack_policy=AckPolicy.NONE, mem_storage=True, inactive_threshold=SNAPSHOT_IDLE_S
    )
    info = await js.add_consumer(stream, config)
    pending = info.num_pending or 0
    pull = Puller(nc, stream, name, batch=SNAPSHOT_BATCH, acks=False)
    await pull.start()
    loop = asyncio.get_running_loop()
    taken = 0  # the consumer sequence of the last message taken
    try:
        quiet_since = loop.time()
        while pending:
            msgs = await pull.take(SNAPSHOT_BATCH, timeout=SNAPSHOT_CHECK_S)
            if not msgs:
                # What it still counts: none when the rest was removed meanwhile (a replay, a
                # delete, an age limit); some the server does not send, past ``wait``: gone.
                # What it sent and this reader has not taken yet (a busy event loop had not
                # read it off the socket when the wait ended) is still to come: a CI run lost
                # keys of a listing that ended on the server's "none left" alone.
                info = await js.consumer_info(stream, name)
                sent = (info.delivered.consumer_seq or 0) if info.delivered else 0
                pending = (info.num_pending or 0) + max(0, sent - taken)
                if pending and loop.time() - quiet_since > wait:
                    raise BusUnavailableError(f"{stream} could not be read now; try again")
                continue
            quiet_since = loop.time()
            last = msgs[-1].metadata
            taken, pending = last.sequence.consumer, last.num_pending
            yield msgs
    finally:
        await pull.stop()
        with contextlib.suppress(Exception):
            await js.delete_consumer(stream, name)


def _take(inner: Any, msg: Msg) -> Msg:
    """Account for a message taken off the subscription's queue as nats-py does."""
    inner._pending_queue.task_done()
    inner._pending_size -= len(msg.data)
    return msg


def _opened(sub: Any, until: float) -> None:
    count, last = _OPEN.get(sub, (0, 0.0))
    _OPEN[sub] = [count + 1, max(last, until)]


def _ended(sub: Any, status: Msg | None) -> None:
    """A pull request ended: the server's status (a heartbeat ends none), or None for one
    that got all it asked for."""
    if status is not None and _status(status) == _INFORMATIVE:
        return
    state = _OPEN.get(sub)
    if state is not None:
        state[0] -= 1


def _clustered(nc: Any) -> bool:
    """Whether the server this client is connected to is one of a cluster (its INFO says)."""
    info = getattr(nc, "_server_info", None) or {}
    return bool(info.get("cluster"))


def _put_back(inner: Any, msg: Msg) -> None:
    """Queue a taken message again (at the end), counted as nats-py counts it."""
    inner._pending_queue.put_nowait(msg)
    inner._pending_size += len(msg.data)


def _status(msg: Msg) -> str | None:
    """The status of a message from the server about the pull request, or None for a message
    of the stream (which always has a reply subject, to be acknowledged on: a status has none,
    whatever headers a publisher gave its message)."""
    if msg.reply or not msg.headers:
        return None
    return msg.headers.get("Status")
