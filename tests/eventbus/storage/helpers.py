"""Bodies for storage tests: deterministic chunk streams and readers."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable

CHUNK = 64 * 1024


async def stream(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    """Yield the given chunks asynchronously."""
    for chunk in chunks:
        yield chunk


def pattern(size: int, chunk: int = CHUNK) -> Iterable[bytes]:
    """``size`` bytes of a deterministic, non-repeating pattern, made one chunk at a time."""
    made = 0
    index = 0
    while made < size:
        block = hashlib.sha256(index.to_bytes(8, "big")).digest() * (chunk // 32)
        block = block[: min(chunk, size - made)]
        made += len(block)
        index += 1
        yield block


def pattern_md5(size: int) -> str:
    """MD5 hex of ``pattern(size)``."""
    digest = hashlib.md5()
    for block in pattern(size):
        digest.update(block)
    return digest.hexdigest()


async def read_all(chunks: AsyncIterable[bytes]) -> bytes:
    """Join a chunk stream."""
    return b"".join([chunk async for chunk in chunks])
