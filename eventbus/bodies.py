"""Core subscriptions that hand a callback each message's body, nothing else decoded.

nats-py parses every message's header block into a dict (a Python loop over its lines), builds
a `Msg` and queues it for a task of the subscription before a callback sees it: for a reader
of a high-rate subject that wants only the body (the gateway's metrics read every
`activation.*` event, whose dozen `ce-` headers they never look at) that is most of its cost.
`subscribe_bodies` subscribes as usual (queue group, reconnects and unsubscribe as nats-py
does them) and hands the body to the callback as the message is read off the socket, in the
read loop, before nats-py decodes anything. The callback runs synchronously: keep it short and
let it not raise (an exception is logged and the message dropped). It hooks the client's
private `_process_msg` (pinned nats-py; tests/eventbus/test_bodies.py checks that other
subscriptions of the connection still get their messages, headers decoded).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription

log = logging.getLogger(__name__)
OnBody = Callable[[bytes], None]
_ProcessMsg = Callable[[int, bytes, bytes, bytes, bytes], Awaitable[None]]
#: where a hooked client keeps its body readers, by subscription id
_READERS = "_deepfaas_body_readers"


async def subscribe_bodies(
    nc: NATS, subject: str, on_body: OnBody, *, queue: str = ""
) -> Subscription:
    """Subscribe ``on_body`` to the bodies of ``subject`` (in ``queue``'s group, if given);
    unsubscribe with the returned subscription's `unsubscribe`."""
    readers = _hook(nc)
    sub = await nc.subscribe(subject, queue)
    readers[sub._id] = on_body
    unsubscribe = sub.unsubscribe

    async def forget(limit: int = 0) -> None:
        readers.pop(sub._id, None)
        await unsubscribe(limit)

    sub.unsubscribe = forget  # type: ignore[method-assign]
    return sub


def _hook(nc: NATS) -> dict[int, OnBody]:
    found: dict[int, OnBody] | None = nc.__dict__.get(_READERS)
    if found is not None:
        return found
    readers: dict[int, OnBody] = {}
    nc.__dict__[_READERS] = readers
    original: _ProcessMsg = nc._process_msg
    stats: Any = nc.stats

    async def process_msg(sid: int, subject: bytes, reply: bytes, data: bytes, hdr: bytes) -> None:
        reader = readers.get(sid)
        if reader is None:
            await original(sid, subject, reply, data, hdr)
            return
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        try:
            reader(data)
        except Exception:  # a reader's bug must not end the connection's read loop
            log.exception("body reader of subscription %d failed", sid)

    nc._process_msg = process_msg  # type: ignore[method-assign,assignment]
    return readers
