"""Bridges between the event loop and worker threads: bodies streamed in, chunks out."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor, Future
from typing import Final, TypeVar

from eventbus.storage.errors import InvalidArgumentError, SizeMismatchError, StorageError
from eventbus.storage.types import CHUNK_SIZE, Body

T = TypeVar("T")

#: how often a worker blocked on the event loop checks whether the upload was cancelled
_POLL_SECONDS: Final = 0.2
#: an async body crosses to the writing thread in pieces of at least this many bytes
BLOCK_SIZE: Final = 1024 * 1024


class ChunkReader:
    """A blocking ``read(n)`` over a body for a worker thread, pulling blocks only on demand."""

    # An async body is gathered on the event loop into blocks of BLOCK_SIZE, one hop between
    # threads per block (not per socket read), and the next block is gathered while the
    # thread writes this one: at most two blocks of it sit in memory. A declared size is
    # enforced exactly: a longer or shorter body raises SizeMismatchError before its last byte
    # is handed out.

    def __init__(
        self,
        data: Body,
        loop: asyncio.AbstractEventLoop,
        *,
        size: int | None,
        bucket: str,
        key: str,
    ) -> None:
        if isinstance(data, bytes | bytearray | memoryview):
            self._view: memoryview | None = memoryview(data)
            self._source: AsyncIterator[bytes] | None = None
        else:
            self._view = None
            self._source = aiter(data)
        self._loop = loop
        self._size = size
        self._bucket = bucket
        self._key = key
        self._buffer = bytearray()
        self._offset = 0
        self._received = 0
        self._eof = False
        self._aborted = threading.Event()
        #: the block the event loop is gathering next, while this thread writes
        self._ahead: Future[bytes | None] | None = None
        #: bytes handed out by ``read`` so far
        self.bytes_read = 0

    def abort(self) -> None:
        """Make the next ``read`` (and any wait for the event loop) raise: the caller left."""
        self._aborted.set()
        self.stop()

    def stop(self) -> None:
        """Stop gathering a block ahead (the reading ended, or failed)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead.cancel()

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all that is left if negative); ``b""`` at the end."""
        while not self._eof and (size < 0 or len(self._buffer) < size):
            chunk = self._take()
            if chunk:
                self._buffer += chunk
        if size < 0:
            size = len(self._buffer)
        with memoryview(self._buffer) as view:
            chunk = bytes(view[:size])
        del self._buffer[:size]
        self.bytes_read += len(chunk)
        return chunk

    def read_block(self) -> bytes:
        """The next piece of the body as it arrived, uncopied (a block of an async body);
        ``b""`` at the end."""
        if self._buffer:
            return self.read(len(self._buffer))
        chunk = b"" if self._eof else self._take() or b""
        self.bytes_read += len(chunk)
        return chunk

    def _take(self) -> bytes | None:
        """The next chunk with the size checked; None (and the end marked) after the last."""
        chunk = self._next_chunk()
        if chunk is None:
            self._eof = True
            if self._size is not None and self._received < self._size:
                raise self._mismatch(f"the body ended after {self._received} bytes")
            return None
        self._received += len(chunk)
        if self._size is not None and self._received > self._size:
            raise self._mismatch("the body is longer")
        if self._size is not None and self._received == self._size:
            # the declared size is reached: the body must end here, before we hand it out
            if self._next_chunk() is not None:
                raise self._mismatch("the body is longer")
            self._eof = True
        return chunk

    def _mismatch(self, detail: str) -> SizeMismatchError:
        return SizeMismatchError(
            f"declared size {self._size} does not match the body: {detail}",
            bucket=self._bucket,
            key=self._key,
            reason="size mismatch",
        )

    def _cancelled(self) -> StorageError:
        return StorageError(
            "upload cancelled", bucket=self._bucket, key=self._key, reason="cancelled"
        )

    def _next_chunk(self) -> bytes | None:
        if self._aborted.is_set():
            raise self._cancelled()
        if self._view is not None:
            chunk = bytes(self._view[self._offset : self._offset + CHUNK_SIZE])
            self._offset += len(chunk)
            return chunk or None
        assert self._source is not None
        future = self._ahead or self._gather()
        self._ahead = None
        while True:
            try:
                pulled = future.result(timeout=_POLL_SECONDS)
                break
            except TimeoutError:
                if self._aborted.is_set():
                    future.cancel()
                    raise self._cancelled() from None
        if pulled is not None:
            self._ahead = self._gather()  # the loop reads on while this thread writes
        return pulled

    def _gather(self) -> Future[bytes | None]:
        assert self._source is not None
        return asyncio.run_coroutine_threadsafe(_pull_block(self._source), self._loop)


async def _pull_block(source: AsyncIterator[bytes]) -> bytes | None:
    """At least BLOCK_SIZE bytes of ``source`` (less at its end) in one piece; None after it."""
    parts: list[bytes] = []
    size = 0
    while size < BLOCK_SIZE:
        try:
            chunk = await anext(source)
        except StopAsyncIteration:
            break
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise InvalidArgumentError(
                f"body chunks must be bytes, not {type(chunk).__name__}", reason="bad body"
            )
        if chunk:
            parts.append(bytes(chunk))
            size += len(chunk)
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else b"".join(parts)


async def run_upload(executor: Executor, reader: ChunkReader, work: Callable[[], T]) -> T:
    """Run ``work`` (which reads ``reader``) in ``executor``; on cancellation abort the reader."""
    # Uploads get their own executor: a worker blocks for the whole upload, and a body that
    # itself uses asyncio.to_thread must still find a free thread in the default one.
    future = asyncio.get_running_loop().run_in_executor(executor, work)
    try:
        return await future
    except asyncio.CancelledError:
        reader.abort()
        raise
    finally:
        reader.stop()


class ChunkStream(AsyncIterator[bytes]):
    """Async iterator of chunks from a blocking ``read`` run in threads; closes exactly once."""

    # Closing while a read is in flight is left to the reading thread, so the event loop never
    # waits on it and the file or connection is never freed under a running read.

    def __init__(self, read: Callable[[], bytes], close: Callable[[], None]) -> None:
        self._read = read
        self._close = close
        self._lock = threading.Lock()
        self._reading = False
        self._closed = False
        self._close_pending = False

    def __aiter__(self) -> ChunkStream:
        """The stream itself."""
        return self

    async def __anext__(self) -> bytes:
        """The next chunk, read in a worker thread."""
        chunk = await asyncio.to_thread(self._read_once)
        if not chunk:
            await self.aclose()
            raise StopAsyncIteration
        return chunk

    def _read_once(self) -> bytes:
        with self._lock:
            if self._closed:
                return b""
            self._reading = True
        try:
            return self._read()
        finally:
            with self._lock:
                self._reading = False
                close_now = self._close_pending
            if close_now:
                self._close()

    async def aclose(self) -> None:
        """Free the file or connection (at once, or after a read in flight ends)."""
        self._shut()

    def _shut(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._reading:
                self._close_pending = True
                return
        self._close()

    def __del__(self) -> None:
        self._shut()
