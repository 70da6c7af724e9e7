"""The worker's side of `ctx.storage` in a sandbox: each call checked against the namespace.

A function reaches the buckets its namespace owns and nothing else. The object that triggered
an activation is always among them: storage events carry the bucket owner's namespace and a
trigger matches only its own namespace's events. (Input bodies are not trusted to widen this:
anyone may invoke with ``{"object": {...}}``.) A bucket it may not reach is answered as
missing, so the names of other namespaces' buckets are never confirmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from eventbus.buckets import BucketOwners
from eventbus.errors import BucketTakenError, DeepfaasError
from eventbus.storage import Storage
from eventbus.storage.errors import (
    BucketExistsError,
    NoSuchBucketError,
    StorageError,
    StorageUnavailableError,
)
from runtimes.sandbox import wire
from runtimes.sandbox.process import RunnerGoneError, RunnerProcess

log = logging.getLogger(__name__)
_END = object()


class StorageGate:
    """Carries out a runner's storage calls for one namespace."""

    def __init__(self, storage: Storage | None, owners: BucketOwners, namespace: str) -> None:
        self.storage = storage
        self.owners = owners
        self.namespace = namespace
        self._puts: dict[int, asyncio.Queue[Any]] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}

    async def on_frame(self, runner: RunnerProcess, header: dict[str, Any], payload: bytes) -> None:
        """A storage frame from the runner."""
        op = header.get("op")
        ident = int(header.get("id", 0))
        if op == "storage":
            if header.get("call") == "put":
                self._puts[ident] = asyncio.Queue()  # before its chunks, which follow at once
            task = asyncio.create_task(self._call(runner, ident, header))
            self._tasks[ident] = task
            task.add_done_callback(lambda _: self._forget(ident))
        elif op == "storage-chunk":
            queue = self._puts.get(ident)
            if queue is not None:
                queue.put_nowait(payload)
        elif op == "storage-end":
            queue = self._puts.get(ident)
            if queue is not None:
                queue.put_nowait(None if header.get("abort") else _END)
        elif op == "storage-cancel":
            running = self._tasks.get(ident)
            if running is not None:
                running.cancel()

    def _forget(self, ident: int) -> None:
        self._tasks.pop(ident, None)

    async def _call(self, runner: RunnerProcess, ident: int, header: dict[str, Any]) -> None:
        call = str(header.get("call"))
        args = dict(header.get("args") or {})
        try:
            if self.storage is None:
                raise StorageError("this worker has no object store configured")
            if call == "get":
                await self._get(runner, ident, args)
                return
            value = await self._dispatch(call, args, ident)
            await runner.send({"op": "storage-reply", "id": ident, "value": value})
        except asyncio.CancelledError:
            return
        except RunnerGoneError:
            return
        except Exception as exc:  # the outer loop of one call: the function must be answered
            if not isinstance(exc, DeepfaasError):
                log.exception("storage call %s of %s failed", call, self.namespace)
                exc = StorageUnavailableError(f"storage call {call} failed: {exc}")
            with contextlib.suppress(RunnerGoneError):
                await runner.send(
                    {
                        "op": "storage-reply",
                        "id": ident,
                        "error": str(exc),
                        "kind": type(exc).__name__,
                    }
                )
        finally:
            self._puts.pop(ident, None)

    async def _reachable(self, bucket: str) -> None:
        if not isinstance(bucket, str) or await self.owners.owner(bucket) != self.namespace:
            raise NoSuchBucketError(f"no bucket {bucket!r} in namespace {self.namespace!r}")

    async def _dispatch(self, call: str, args: dict[str, Any], ident: int) -> Any:
        store = self.storage
        assert store is not None
        bucket = args.get("bucket", "")
        if call == "list_buckets":
            owned = [b for b in await store.list_buckets()
                     if await self.owners.owner(b.name) == self.namespace]  # fmt: skip
            return [wire.dump_bucket(b) for b in owned]
        if call == "bucket_exists":
            try:
                await self._reachable(bucket)
            except NoSuchBucketError:
                return False
            return await store.bucket_exists(bucket)
        if call == "create_bucket":
            try:
                # A bucket that exists without an owner record is `default`'s: never claimable.
                claimed = await self.owners.ensure_writable(bucket, self.namespace, store)
            except BucketTakenError as exc:
                raise BucketExistsError(str(exc)) from exc
            try:
                return wire.dump_bucket(await store.create_bucket(bucket))
            except StorageError:
                if claimed:
                    await self.owners.release(bucket)
                raise
        if call == "delete_bucket":
            await self._reachable(bucket)
            await store.delete_bucket(bucket)
            await self.owners.release(bucket)
            return None
        if call == "stat":
            await self._reachable(bucket)
            return wire.dump_info(await store.stat(bucket, str(args["key"])))
        if call == "list":
            await self._reachable(bucket)
            result = await store.list(
                bucket,
                prefix=str(args.get("prefix") or ""),
                delimiter=args.get("delimiter"),
                start_after=args.get("start_after"),
                limit=int(args.get("limit") or 1000),
            )
            return wire.dump_listing(result)
        if call == "delete":
            await self._reachable(bucket)
            return await store.delete(bucket, str(args["key"]))
        if call == "put":
            await self._reachable(bucket)
            queue = self._puts[ident]
            info = await store.put(
                bucket,
                str(args["key"]),
                _body(queue),
                content_type=str(args.get("content_type") or "application/octet-stream"),
                metadata={str(k): str(v) for k, v in dict(args.get("metadata") or {}).items()},
                size=args.get("size"),
            )
            return wire.dump_info(info)
        raise StorageError(f"unknown storage call {call!r}")

    async def _get(self, runner: RunnerProcess, ident: int, args: dict[str, Any]) -> None:
        store = self.storage
        assert store is not None
        bucket, key = args.get("bucket", ""), str(args.get("key", ""))
        await self._reachable(bucket)
        info, stream = await store.get(
            bucket, key, offset=int(args.get("offset") or 0), length=args.get("length")
        )
        try:
            await runner.send({"op": "storage-reply", "id": ident, "value": wire.dump_info(info)})
            async for chunk in stream:
                await runner.send({"op": "storage-chunk", "id": ident}, chunk)
            await runner.send({"op": "storage-end", "id": ident})
        except DeepfaasError as exc:
            await runner.send(
                {"op": "storage-end", "id": ident, "error": str(exc), "kind": type(exc).__name__}
            )
        finally:
            await stream.aclose()

    async def close(self) -> None:
        """Cancel calls still running."""
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)


async def _body(queue: asyncio.Queue[Any]) -> AsyncIterator[bytes]:
    while True:
        item = await queue.get()
        if item is _END:
            return
        if item is None:
            raise StorageError("the function abandoned the upload")
        yield item
