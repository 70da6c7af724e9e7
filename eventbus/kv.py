"""Reads and compare-and-set writes in a JetStream KV bucket, written once.

Every store on the bus (functions, triggers, subscriptions, keys, catalog, deployments, the
OpenWhisk documents, activation claims, leases, schedules) lists and updates its entries through
these helpers, so that "the bucket is empty" and "the bus is down" never read alike: only
nats-py's no-keys error means empty, only its not-found error means absent, and only its
wrong-last-sequence error means another writer came first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from eventbus.errors import ConflictError

M = TypeVar("M", bound=BaseModel)
#: compare-and-set attempts before a writer is told the entry keeps changing
CAS_TRIES = 20


async def keys(kv: KeyValue, prefix: str = "") -> list[str]:
    """Keys of live entries that start with ``prefix``; an empty bucket has none."""
    # nats-py 2.16's `keys(filters=…)` finds nothing on nats-server 2.15: filter here instead.
    try:
        found = await kv.keys()
    except NoKeysError:
        return []
    return [key for key in found if key.startswith(prefix)]


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
