"""Reads and compare-and-set writes in a JetStream KV bucket, written once.

Every store on the bus (functions, triggers, subscriptions, keys, catalog, deployments, the
OpenWhisk documents, activation claims, leases, schedules) lists and updates its entries through
these helpers, so that "the bucket is empty" and "the bus is down" never read alike: only a
consumer's count of nothing means empty, only nats-py's not-found error means absent, and only
its wrong-last-sequence error means another writer came first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from eventbus.consume import snapshot
from eventbus.errors import ConflictError

if TYPE_CHECKING:
    from eventbus.connection import Bus

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
#: compare-and-set attempts before a writer is told the entry keeps changing
CAS_TRIES = 20
#: the header of a KV message that says it removes its key, and the values that do
OPERATION_HEADER = "KV-Operation"
REMOVED = frozenset({"DEL", "PURGE"})
#: keys' tokens the server may filter on (no wildcards)
_KEY_TOKENS = re.compile(r"[A-Za-z0-9_=/-]+(\.[A-Za-z0-9_=/-]+)*")


async def keys(kv: KeyValue, prefix: str = "") -> list[str]:
    """Keys of live entries that start with ``prefix``; an empty bucket has none, a bus that
    does not answer is an error.

    Read through a consumer of the call's own (the last entry of each key, headers only),
    whose count comes with its creation: nats-py's `KeyValue.keys` read the count from a push
    consumer already delivering and now and then found an empty bucket in a full one (a CI
    run caught it)."""
    pre: str = kv._pre  # ``$KV.<bucket>.``
    # a prefix of whole tokens is filtered by the server; any other here
    tokens = prefix.endswith(".") and _KEY_TOKENS.fullmatch(prefix[:-1]) is not None
    config = ConsumerConfig(
        filter_subject=f"{pre}{prefix}>" if tokens else f"{pre}>",
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        headers_only=True,
    )
    found: list[str] = []
    async with contextlib.aclosing(snapshot(kv._js._nc, kv._js, kv._stream, config)) as batches:
        async for msgs in batches:
            for msg in msgs:
                operation = (msg.headers or {}).get(OPERATION_HEADER)
                key = msg.subject[len(pre) :]
                if operation not in REMOVED and key.startswith(prefix):
                    found.append(key)
    return found


async def entry(kv: KeyValue, key: str) -> KeyValue.Entry | None:
    """The live entry (its value and revision), or None if absent or deleted."""
    try:
        found = await kv.get(key)
    except KeyNotFoundError:  # a delete marker too (KeyDeletedError)
        return None
    return found if found.value else None


async def read(kv: KeyValue, key: str, model: type[M]) -> tuple[M, int] | None:
    """The entry as ``model`` and its revision, or None if absent or deleted."""
    found = await entry(kv, key)
    if found is None or found.value is None:
        return None
    return model.model_validate_json(found.value), found.revision or 0


async def write(kv: KeyValue, key: str, value: bytes, *, last: int | None) -> int | None:
    """Write ``value`` if the entry is still at revision ``last`` (None: absent or deleted);
    the new revision, or None when another writer came first."""
    try:
        if last is None:
            return int(await kv.create(key, value))
        return int(await kv.update(key, value, last=last))
    except KeyWrongLastSequenceError:
        return None


async def cas(
    kv: KeyValue, key: str, model: type[M], change: Callable[[M | None], M]
) -> tuple[M, int]:
    """Apply ``change`` to the current value and write it if nobody wrote in between."""
    for _ in range(CAS_TRIES):
        found = await read(kv, key, model)
        updated = change(found[0] if found else None)
        value = updated.model_dump_json().encode()
        revision = await write(kv, key, value, last=found[1] if found else None)
        if revision is not None:
            return updated, revision
    raise ConflictError(f"entry {key!r} keeps changing; retry", key=key)


class KVMirror(Generic[M]):
    """The entries of a bucket under ``prefix``, as ``model``, kept current by a watch.

    A read of `get` is a dict lookup; it answers None while the mirror is not `live` (before
    its first snapshot, and from a broken watch until the next snapshot), and for a key the
    watch has not brought yet: the caller reads KV then (`read`), so a value written a moment
    ago is never missed, only a deleted one may be seen for as long as the watch lags.
    """

    def __init__(self, bus: Bus, bucket: str, prefix: str, model: type[M]) -> None:
        self.bus = bus
        self.bucket = bucket
        self.prefix = prefix
        self.model = model
        self.values: dict[str, M] = {}
        self.live = False
        self._task: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()

    async def start(self, timeout: float = 10.0) -> None:
        """Follow the bucket; wait up to ``timeout`` for the first snapshot."""
        self._task = asyncio.create_task(self._watch(), name=f"mirror-{self.bucket}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._synced.wait(), timeout)

    async def stop(self) -> None:
        """Stop following the bucket."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.live = False

    def get(self, name: str) -> M | None:
        """The value under ``prefix + name``, if the mirror holds it now."""
        return self.values.get(name) if self.live else None

    async def _watch(self) -> None:
        while True:
            watcher: Any = None
            try:
                kv = await self.bus.kv(self.bucket)
                watcher = await kv.watch(self.prefix + ">")
                async for found in watcher:
                    if found is None:  # the snapshot is whole
                        self.live = True
                        self._synced.set()
                        continue
                    name = found.key.removeprefix(self.prefix)
                    if found.operation in REMOVED or not found.value:
                        self.values.pop(name, None)
                        continue
                    try:
                        self.values[name] = self.model.model_validate_json(found.value)
                    except ValueError as exc:  # an entry this version cannot read
                        log.warning("%s/%s ignored: %s", self.bucket, found.key, exc)
                        self.values.pop(name, None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("watch of %s ended (%s); reads go to KV meanwhile", self.bucket, exc)
            finally:
                self.live = False
                self.values.clear()
                if watcher is not None:
                    with contextlib.suppress(Exception):
                        await watcher.stop()
            await asyncio.sleep(0.5)
