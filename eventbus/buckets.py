"""Who owns a bucket: bucket names are global (as in S3), each owned by one namespace.

Owners live in the ``buckets`` KV bucket (key: bucket name, value: the owner record). A bucket
with no record (made before namespaces owned buckets, or straight in MinIO/S3) belongs to
``default``. A claim is a compare-and-set create, so of two claims of one name exactly one wins.
Reads come from an in-process map that a KV watch keeps current (every bucket's owner, so the
worker and dispatcher ask on every event without a KV round trip); without a running watch
every read goes to KV.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

import orjson
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from eventbus.connection import Bus
from eventbus.errors import BucketAccessError, BucketTakenError
from eventbus.kv import entry, write
from eventbus.namespaces import DEFAULT_NAMESPACE, is_name
from eventbus.storage.keys import is_valid_bucket_name, validate_bucket_name
from eventbus.storage.types import Storage
from eventbus.streams import BUCKETS_KV

__all__ = ["BucketAccessError", "BucketOwners", "BucketTakenError"]
log = logging.getLogger(__name__)


class BucketOwners:
    """Owner records of buckets: read (cached, watched), claimed and released."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._owners: dict[str, str] = {}
        self._watch: asyncio.Task[None] | None = None
        self._watching = False
        self._ready = asyncio.Event()

    async def start(self, *, wait: float = 2.0) -> None:
        """Watch the records so that reads come from memory; waits up to ``wait`` s for them."""
        if self._watch is None:
            self._watch = asyncio.create_task(self._watch_changes(), name="bucket-owner-watch")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout=wait)

    async def stop(self) -> None:
        """Stop watching; reads go to KV again."""
        self._watching = False
        self._ready.clear()
        self._owners.clear()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None

    async def owner(self, bucket: str) -> str:
        """The namespace that owns ``bucket`` (``default`` when it has no record)."""
        if self._watching:
            return self._owners.get(bucket, DEFAULT_NAMESPACE)
        found = await self._read(bucket)
        return DEFAULT_NAMESPACE if found is None else found[0]

    async def owns(self, bucket: str, namespace: str) -> bool:
        """Whether ``namespace`` owns ``bucket``."""
        return await self.owner(bucket) == namespace

    async def claim(self, bucket: str, namespace: str) -> bool:
        """Record ``namespace`` as the owner (True if new, False if already its own;
        `BucketTakenError` if another's); a name that may already exist in the store without a
        record is `default`'s: claim it through `ensure_writable`."""
        if not is_name(namespace):
            raise ValueError(f"not a valid namespace: {namespace!r}")
        validate_bucket_name(bucket)
        kv = await self.bus.kv(BUCKETS_KV)
        record = orjson.dumps({"namespace": namespace, "claimed": datetime.now(UTC).isoformat()})
        if await write(kv, bucket, record, last=None) is None:
            found = await self._read(bucket)
            owner = DEFAULT_NAMESPACE if found is None else found[0]
            if owner != namespace:
                raise BucketTakenError(f"bucket name {bucket!r} is taken", bucket=bucket)
            return False
        self._owners[bucket] = namespace
        return True

    async def ensure_writable(self, bucket: str, namespace: str, storage: Storage) -> bool:
        """Let ``namespace`` write ``bucket``: its own, or a name nobody holds (claimed now, True);
        `BucketTakenError` when another namespace owns it or it exists with no record."""
        owner = await self.owner(bucket)
        if owner == namespace and (
            owner != DEFAULT_NAMESPACE or await storage.bucket_exists(bucket)
        ):
            return False
        if owner != DEFAULT_NAMESPACE or (
            namespace != DEFAULT_NAMESPACE and await storage.bucket_exists(bucket)
        ):
            raise BucketTakenError(f"bucket name {bucket!r} is taken", bucket=bucket)
        return await self.claim(bucket, namespace)

    async def release(self, bucket: str) -> None:
        """Forget the owner record of ``bucket`` (after the bucket itself is gone)."""
        kv = await self.bus.kv(BUCKETS_KV)
        with contextlib.suppress(KeyNotFoundError):
            await kv.delete(bucket)
        self._owners.pop(bucket, None)

    async def _read(self, bucket: str) -> tuple[str, int] | None:
        if not is_valid_bucket_name(bucket):
            return None  # never claimed; the store refuses the name itself
        found = await entry(await self.bus.kv(BUCKETS_KV), bucket)
        if found is None or found.value is None:
            return None
        return _namespace_of(found.value), found.revision or 0

    async def _watch_changes(self) -> None:
        while True:
            watcher: Any = None
            try:
                kv: KeyValue = await self.bus.kv(BUCKETS_KV)
                watcher = await kv.watchall()
                async for entry in watcher:
                    if entry is None:  # initial values delivered: the map is whole
                        self._watching = True
                        self._ready.set()
                        continue
                    if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                        self._owners.pop(entry.key, None)
                    else:
                        self._owners[entry.key] = _namespace_of(entry.value)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the outer loop of the watch: log, read KV meanwhile
                log.warning("bucket owner watch interrupted (reads go to KV meanwhile): %s", exc)
            finally:
                self._watching = False
                self._owners.clear()
                if watcher is not None:
                    with contextlib.suppress(Exception):
                        await watcher.stop()
            await asyncio.sleep(1.0)


def _namespace_of(value: bytes) -> str:
    record = orjson.loads(value)
    namespace = record.get("namespace") if isinstance(record, dict) else None
    return namespace if isinstance(namespace, str) and namespace else DEFAULT_NAMESPACE
