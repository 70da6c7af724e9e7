"""`ctx.storage` inside the sandbox: the Storage protocol, carried out by the worker.

The runner holds no credentials and no data dir; each call is a frame to its worker, which
checks the function's namespace may do it and answers (object bytes in chunk frames). A sync
handler may call it from its own event loop (``asyncio.run`` in its thread): the frames are
then sent and awaited on the runner's loop, and only the results cross back.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from datetime import timedelta
from typing import Any, TypeVar

from eventbus.storage.errors import UnsupportedOperationError
from eventbus.storage.types import (
    CHUNK_SIZE,
    DEFAULT_CONTENT_TYPE,
    MAX_LIST_LIMIT,
    Body,
    BucketInfo,
    ListResult,
    ObjectInfo,
)
from runtimes.sandbox import wire

T = TypeVar("T")
Send = Callable[[dict[str, Any], bytes], Coroutine[Any, Any, None]]
Frame = tuple[dict[str, Any], bytes]


async def on_loop(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` on ``loop``, from that loop or from another thread's."""
    if asyncio.get_running_loop() is loop:
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))


class ProxyStream:
    """An object's bytes as the worker sends them."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[Frame],
        ended: Callable[[], None],
        close: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        self._loop = loop
        self._queue = queue
        self._ended = ended
        self._close = close
        self._done = False

    def __aiter__(self) -> ProxyStream:
        return self

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        header, payload = await on_loop(self._loop, self._queue.get())
        if header["op"] == "storage-chunk":
            return payload
        self._done = True
        self._ended()
        if header.get("error"):
            raise wire.storage_error(header.get("kind", ""), header["error"])
        raise StopAsyncIteration

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            await on_loop(self._loop, self._close())


class ProxyStorage:
    """The Storage protocol over the runner's pipe."""

    def __init__(self, send: Send, loop: asyncio.AbstractEventLoop) -> None:
        self._send_home = send
        self._loop = loop
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Queue[Frame]] = {}

    @property
    def name(self) -> str:
        return "sandbox"

    @property
    def source(self) -> str:
        return "/sandbox/storage"

    def deliver(self, header: dict[str, Any], payload: bytes) -> None:
        """A reply, chunk or end frame from the worker, for the call it names."""
        queue = self._pending.get(int(header.get("id", 0)))
        if queue is not None:
            queue.put_nowait((header, payload))

    async def _send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        await on_loop(self._loop, self._send_home(header, payload))

    async def _open(
        self, call: str, args: dict[str, Any], payload: bytes = b""
    ) -> tuple[int, asyncio.Queue[Frame]]:
        ident = next(self._ids)
        queue: asyncio.Queue[Frame] = asyncio.Queue()  # used on the runner's loop only
        self._pending[ident] = queue
        await self._send({"op": "storage", "id": ident, "call": call, "args": args}, payload)
        return ident, queue

    async def _reply(self, ident: int, queue: asyncio.Queue[Frame]) -> Any:
        try:
            header, _ = await on_loop(self._loop, queue.get())
        finally:
            self._pending.pop(ident, None)
        if header.get("error"):
            raise wire.storage_error(header.get("kind", ""), header["error"])
        return header.get("value")

    async def _call(self, call: str, **args: Any) -> Any:
        ident, queue = await self._open(call, args)
        return await self._reply(ident, queue)

    async def create_bucket(self, bucket: str) -> BucketInfo:
        return wire.load_bucket(await self._call("create_bucket", bucket=bucket))

    async def list_buckets(self) -> tuple[BucketInfo, ...]:
        return tuple(wire.load_bucket(b) for b in await self._call("list_buckets"))

    async def bucket_exists(self, bucket: str) -> bool:
        return bool(await self._call("bucket_exists", bucket=bucket))

    async def delete_bucket(self, bucket: str) -> None:
        await self._call("delete_bucket", bucket=bucket)

    async def put(
        self,
        bucket: str,
        key: str,
        data: Body,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
        size: int | None = None,
    ) -> ObjectInfo:
        args = {
            "bucket": bucket,
            "key": key,
            "content_type": content_type,
            "metadata": dict(metadata or {}),
            "size": size,
        }
        ident, queue = await self._open("put", args)
        try:
            chunks = _chunks(data)
            async for chunk in chunks:
                await self._send({"op": "storage-chunk", "id": ident}, chunk)
            await self._send({"op": "storage-end", "id": ident}, b"")
        except BaseException:
            await self._send({"op": "storage-end", "id": ident, "abort": True}, b"")
            self._pending.pop(ident, None)
            raise
        return wire.load_info(await self._reply(ident, queue))

    async def get(
        self, bucket: str, key: str, *, offset: int = 0, length: int | None = None
    ) -> tuple[ObjectInfo, ProxyStream]:
        ident, queue = await self._open(
            "get", {"bucket": bucket, "key": key, "offset": offset, "length": length}
        )
        header, _ = await on_loop(self._loop, queue.get())
        if header.get("error"):
            self._pending.pop(ident, None)
            raise wire.storage_error(header.get("kind", ""), header["error"])

        async def close() -> None:
            self._pending.pop(ident, None)
            await self._send({"op": "storage-cancel", "id": ident}, b"")

        def ended() -> None:
            self._pending.pop(ident, None)

        return wire.load_info(header["value"]), ProxyStream(self._loop, queue, ended, close)

    async def stat(self, bucket: str, key: str) -> ObjectInfo:
        return wire.load_info(await self._call("stat", bucket=bucket, key=key))

    async def list(
        self,
        bucket: str,
        prefix: str = "",
        delimiter: str | None = None,
        start_after: str | None = None,
        limit: int = MAX_LIST_LIMIT,
    ) -> ListResult:
        value = await self._call(
            "list",
            bucket=bucket,
            prefix=prefix,
            delimiter=delimiter,
            start_after=start_after,
            limit=limit,
        )
        return wire.load_listing(value)

    async def delete(self, bucket: str, key: str) -> bool:
        return bool(await self._call("delete", bucket=bucket, key=key))

    async def presigned_get_url(
        self, bucket: str, key: str, *, expires: timedelta = timedelta(hours=1)
    ) -> str:
        raise UnsupportedOperationError("presigned URLs are not available inside the sandbox")

    async def presigned_put_url(
        self, bucket: str, key: str, *, expires: timedelta = timedelta(hours=1)
    ) -> str:
        raise UnsupportedOperationError("presigned URLs are not available inside the sandbox")

    async def close(self) -> None:
        return None


async def _chunks(data: Body) -> AsyncIterator[bytes]:
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data)
        for start in range(0, len(view), CHUNK_SIZE):
            yield bytes(view[start : start + CHUNK_SIZE])
        return
    async for chunk in data:
        if chunk:
            yield bytes(chunk)
