"""Bringing one stream or KV bucket to what is declared, and reading what each keeps.

The rules every stream of `eventbus.streams` follows: replicas only go up, a budget applies
where it was set (or where a stream has none yet), a cluster electing leaders is waited out.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, KeyValueConfig, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError

from eventbus.errors import BusUnavailableError

#: "no suitable peers for placement": a new cluster has not met all its servers yet
NO_PEERS = 10005

#: what a JetStream API call answers while leaders are being elected
TRANSIENT: tuple[type[Exception], ...] = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    ServiceUnavailableError,
)


async def wait_for_jetstream(js: JetStreamContext, timeout: float = 30.0) -> None:
    """Return once JetStream answers (a new cluster elects its meta leader first)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            await js.account_info()
            return
        except (ServiceUnavailableError, nats.errors.NoRespondersError, nats.errors.TimeoutError):
            if loop.time() >= deadline:
                raise BusUnavailableError(f"JetStream did not answer in {timeout} s") from None
            await asyncio.sleep(0.25)


async def sync_stream(
    js: JetStreamContext,
    wanted: StreamConfig,
    *,
    replicas: int,
    budget: int | None,
    explicit: bool,
) -> None:
    """Create ``wanted`` with ``budget`` bytes, or bring the existing stream to it: replicas
    raised to ``replicas`` (never lowered), the budget applied where ``explicit`` or where the
    stream has none yet, and the discard policy ``wanted`` names."""
    name = str(wanted.name)
    wanted = dataclasses.replace(wanted, num_replicas=replicas)
    # Look first: a role that may not create or change streams (a worker) only reads them.
    try:
        current = (await js.stream_info(name)).config
    except NotFoundError:
        created = dataclasses.replace(wanted, max_bytes=budget)
        try:
            await js.add_stream(created)
            return
        except BadRequestError as exc:
            if exc.err_code == NO_PEERS:
                raise
            # it exists after all (made just now, or its replicas not answering yet): look
            # again and change only what the rules allow, never a blind update that would
            # lower its replicas
            current = await _settled(js, name)
    discard = wanted.discard or DiscardPolicy.OLD
    changed = _reconciled(current, replicas, budget, explicit, discard)
    if _differs(current, wanted) or changed is not current:
        await js.update_stream(
            dataclasses.replace(
                wanted,
                num_replicas=changed.num_replicas,
                max_bytes=changed.max_bytes,
            )
        )


async def sync_bucket(
    js: JetStreamContext,
    config: KeyValueConfig,
    *,
    discard: DiscardPolicy,
    replicas: int,
    budget: int | None,
    explicit: bool,
) -> None:
    """`sync_stream` for a KV bucket (its stream ``KV_<bucket>``)."""
    name = f"KV_{config.bucket}"
    try:
        current = (await js.stream_info(name)).config
    except NotFoundError:
        config = dataclasses.replace(config, max_bytes=budget)
        try:
            await js.create_key_value(config)
        except BadRequestError as exc:  # another process made it just now
            if exc.err_code == NO_PEERS:
                raise
        current = await _settled(js, name)
        if budget is None or current.discard == discard:
            return
        explicit = True  # nats-py makes every bucket DiscardNew: set this one's policy now
    changed = _reconciled(current, replicas, budget, explicit, discard)
    if changed is not current:
        await js.update_stream(changed)


async def _settled(js: JetStreamContext, name: str, timeout: float = 15.0) -> StreamConfig:
    """A just-created stream's config (a cluster may answer "not found" until its replicas
    have elected a leader)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return (await js.stream_info(name)).config
        except NotFoundError:
            if loop.time() >= deadline:
                raise
            await asyncio.sleep(0.2)


def _reconciled(
    current: StreamConfig, replicas: int, budget: int | None, explicit: bool, discard: DiscardPolicy
) -> StreamConfig:
    """``current`` with replicas raised (never lowered), the budget applied where it was set
    (or where none is yet) and the discard policy; the same object when nothing changes."""
    update: dict[str, object] = {}
    if replicas > (current.num_replicas or 1):
        update["num_replicas"] = replicas
    unbounded = current.max_bytes is None or current.max_bytes < 0
    if budget is not None and (explicit or unbounded):
        if current.max_bytes != budget:
            update["max_bytes"] = budget
        if current.discard != discard:
            update["discard"] = discard
    return dataclasses.replace(current, **update) if update else current  # type: ignore[arg-type]


def _differs(current: StreamConfig, wanted: StreamConfig) -> bool:
    def key(c: StreamConfig) -> tuple[object, ...]:
        retention = getattr(c.retention, "value", c.retention)
        discard = getattr(c.discard, "value", c.discard)
        return (
            c.subjects,
            retention,
            c.max_age or 0.0,
            c.duplicate_window,
            c.allow_direct,
            discard,
        )

    return key(current) != key(wanted)


@dataclass(frozen=True)
class Usage:
    """What a stream (or KV bucket's stream) keeps now, against its budget."""

    name: str
    bytes: int
    messages: int
    #: max_bytes, None when the stream has no byte limit
    budget: int | None
    #: ``old`` (the oldest go first at the limit) or ``new`` (new writes are refused)
    discard: str

    @property
    def fraction(self) -> float | None:
        """How full it is (0..1), None without a budget."""
        return None if not self.budget else self.bytes / self.budget


async def streams_usage(js: JetStreamContext, names: Iterable[str]) -> list[Usage]:
    """Each of the streams ``names`` that exists, with its bytes, messages and budget."""
    found = []
    for name in names:
        try:
            info = await js.stream_info(name)
        except NotFoundError:
            continue
        limit = info.config.max_bytes
        discard = getattr(info.config.discard, "value", info.config.discard) or "old"
        found.append(
            Usage(
                name=name,
                bytes=int(info.state.bytes or 0),
                messages=int(info.state.messages or 0),
                budget=int(limit) if limit is not None and limit > 0 else None,
                discard=str(discard),
            )
        )
    return found
