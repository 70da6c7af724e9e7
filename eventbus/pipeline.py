"""JetStream publishes with pipelined acks: many in flight, one reply subscription, one timer.

nats-py's `js.publish` is a request per message: a random inbox token, a future, an
`asyncio.wait_for` and a `PubAck` parse each, one round trip awaited at a time per caller.
`Pipeline` writes each publish with a reply subject ``<prefix>.<counter>`` under one wildcard
subscription, resolves the caller's future when the ack arrives (acks of many publishes come
back in the same read), and expires what is still pending with one timer armed at the
earliest deadline, not one per publish. A caller sees the errors `js.publish` raises: nats-py's
`TimeoutError`, `NoStreamResponseError` (no stream listens on the subject) and the
`APIError` family from the server's answer; `kv_write` turns a wrong last sequence into None,
as `eventbus.kv.write` does.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from typing import Any, Final

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import (
    BadSubjectError,
    ConnectionClosedError,
    ConnectionDrainingError,
    MaxPayloadError,
    OutboundBufferLimitError,
)
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import Header, PubAck
from nats.js.errors import APIError, InvalidKeyError, NoStreamResponseError
from nats.js.kv import KeyValue, _is_key_valid

from eventbus.kv import write

#: nats-py's default JetStream request timeout, which `js.publish` and KV writes use
PUBLISH_TIMEOUT_S: Final = 5.0
#: JetStream's error codes for "the subject is not at the expected last sequence"
WRONG_LAST_SEQUENCE: Final = (10071, 10164)
_NO_RESPONDERS: Final = "503"
_EXPECTED_LAST: Final = Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value
#: what nats-py accepts as a header name and as a subject to publish on
_HEADER_KEY: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_INVALID_SUBJECT: Final = re.compile(r"[ \t\r\n]")
#: header names seen valid (events use a handful)
_KEYS: dict[str, str] = {}


class Pipeline:
    """Publishes on JetStream and waits for each ack, many in flight on one connection."""

    def __init__(self, nc: NATS, *, timeout: float = PUBLISH_TIMEOUT_S) -> None:
        self.nc = nc
        self.timeout = timeout
        self._prefix = ""
        self._counter = itertools.count()
        #: reply token -> (the caller's future, its deadline in loop time), oldest first
        self._pending: dict[str, tuple[asyncio.Future[PubAck], float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._starting: asyncio.Future[None] | None = None

    async def publish(
        self,
        subject: str,
        payload: bytes,
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> PubAck:
        """Publish and wait for JetStream's ack (see the module docstring for the errors)."""
        return await (await self.send(subject, payload, headers=headers, timeout=timeout))

    async def send(
        self,
        subject: str,
        payload: bytes,
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> asyncio.Future[PubAck]:
        """Write the publish into the connection's buffer; the future of its ack."""
        if not self._prefix:
            await self._start()
        token = str(next(self._counter))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[PubAck] = loop.create_future()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        self._pending[token] = (future, deadline)
        try:
            if headers:
                await self._publish(subject, self._prefix + token, payload, headers)
            else:
                await self.nc.publish(subject, payload, reply=self._prefix + token)
        except BaseException:
            self._pending.pop(token, None)
            raise
        if self._timer is None or deadline < self._timer_at:
            self._arm(deadline)
        return future

    async def kv_write(
        self, kv: KeyValue, key: str, value: bytes, *, last: int | None
    ) -> int | None:
        """`eventbus.kv.write` pipelined: write ``value`` if the entry is still at revision
        ``last`` (None: absent); the new revision, or None when another writer came first."""
        if not _is_key_valid(key):
            raise InvalidKeyError(key)
        headers = {_EXPECTED_LAST: str(last or 0)}
        try:
            ack = await self.publish(f"{kv._pre}{key}", value, headers=headers)
        except APIError as exc:
            if exc.err_code not in WRONG_LAST_SEQUENCE:
                raise
            if last is None:
                # a key that was deleted has a tombstone at some revision: nats-py's create
                # reads it and writes over it (the rare path, one more round trip)
                return await write(kv, key, value, last=None)
            return None
        return int(ack.seq)

    async def _publish(
        self, subject: str, reply: str, payload: bytes, headers: dict[str, str]
    ) -> None:
        """`nc.publish` with headers, the header block encoded in one join (nats-py builds it
        byte by byte with a regex per key: a third of a completion event's publish). It keeps
        `nc.publish`'s checks and writes into nats-py's send buffer (private to the pinned
        nats-py; tests/eventbus/test_pipeline.py compares the headers that arrive)."""
        nc = self.nc
        block = _header_block(headers)
        if block is None:  # a key or value nats-py would reject or rewrite: its own path
            await nc.publish(subject, payload, reply=reply, headers=headers)
            return
        if _INVALID_SUBJECT.search(subject):
            raise BadSubjectError
        if nc.is_closed:
            raise ConnectionClosedError
        if nc.is_draining_pubs:
            raise ConnectionDrainingError
        size = len(payload)
        if not nc.is_connected and (
            nc._max_pending_size <= 0 or size + nc._pending_data_size > nc._max_pending_size
        ):
            raise OutboundBufferLimitError
        if size > nc._max_payload:
            raise MaxPayloadError
        nc.stats["out_msgs"] += 1
        nc.stats["out_bytes"] += size
        head = f"HPUB {subject} {reply} {len(block)} {len(block) + size}\r\n".encode()
        await nc._send_command(b"".join((head, block, payload, b"\r\n")))
        if nc._flush_queue is not None and nc._flush_queue.empty():
            await nc._flush_pending()

    @property
    def in_flight(self) -> int:
        """Publishes whose ack has not come yet."""
        return len(self._pending)

    async def _start(self) -> None:
        if self._starting is None:
            self._starting = asyncio.get_running_loop().create_future()
            try:
                prefix = self.nc.new_inbox() + "."
                await self.nc.subscribe(prefix + "*", cb=self._on_reply)
            except BaseException as exc:
                starting, self._starting = self._starting, None
                starting.set_exception(exc)
                starting.exception()  # retrieved: a later caller tries again
                raise
            self._prefix = prefix
            self._starting.set_result(None)
        else:
            await asyncio.shield(self._starting)

    async def _on_reply(self, msg: Msg) -> None:
        found = self._pending.pop(msg.subject[len(self._prefix) :], None)
        if found is None or found[0].done():
            return  # expired, or its caller gave up
        future = found[0]
        if msg.headers and msg.headers.get(Header.STATUS) == _NO_RESPONDERS:
            future.set_exception(NoStreamResponseError())
            return
        try:
            answer: dict[str, Any] = orjson.loads(msg.data)
            if "error" in answer:
                APIError.from_error(answer["error"])  # raises the matching APIError subclass
            ack = PubAck(
                stream=answer["stream"],
                seq=answer["seq"],
                domain=answer.get("domain"),
                duplicate=answer.get("duplicate"),
            )
        except Exception as exc:  # the server's error, or an answer that is not a PubAck
            future.set_exception(exc)
            return
        future.set_result(ack)

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = asyncio.get_running_loop().call_at(at, self._expire)

    def _expire(self) -> None:
        self._timer = None
        now = asyncio.get_running_loop().time()
        expired = [token for token, (_, deadline) in self._pending.items() if deadline <= now]
        for token in expired:
            future, _ = self._pending.pop(token)
            if not future.done():
                future.set_exception(NatsTimeoutError())
        if self._pending:
            self._arm(min(deadline for _, deadline in self._pending.values()))


def _header_block(headers: dict[str, str]) -> bytes | None:
    """The NATS header block of ``headers``, or None when a key is not a valid header name or
    a value holds a line break (nats-py's `publish` refuses, or rewrites, those)."""
    lines = ["NATS/1.0\r\n"]
    for name, value in headers.items():
        key = _KEYS.get(name)
        if key is None:
            key = name.strip()
            if not _HEADER_KEY.fullmatch(key):
                return None
            if len(_KEYS) < 4096:
                _KEYS[name] = key
        lines.append(f"{key}: {value.strip()}\r\n")
    lines.append("\r\n")
    text = "".join(lines)
    # every line ends in exactly one CR LF: a value with a line break of its own adds one
    if text.count("\n") != len(lines) or text.count("\r") != len(lines):
        return None
    return text.encode()
