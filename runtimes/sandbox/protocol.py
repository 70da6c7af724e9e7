"""Frames between a worker and its sandboxed runner: a JSON header and an optional payload.

One frame is ``u32 header length, u32 payload length, header (orjson), payload (bytes)``,
so binary inputs, results and object chunks cross the pipe as bytes, never as base64.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any, Final

import orjson

_PREFIX: Final = struct.Struct(">II")
#: a header is small (no payloads in it): anything larger is a broken or hostile peer
MAX_HEADER: Final = 4 << 20
MAX_PAYLOAD: Final = 64 << 20


class ProtocolError(Exception):
    """The peer sent something that is not a frame."""


def encode(header: dict[str, Any], payload: bytes = b"") -> bytes:
    """One frame, ready to write."""
    head = orjson.dumps(header)
    return _PREFIX.pack(len(head), len(payload)) + head + payload


class FrameWriter:
    """Writes frames to a stream, those sent in one turn of the event loop in one write: a
    burst of runs (or of their answers) costs one syscall and one wake-up of the peer, not
    one each. A frame of ``FLUSH_AT`` bytes or more goes out at once, with back-pressure."""

    FLUSH_AT: Final = 64 << 10

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._pending: list[bytes] = []
        self._error: BaseException | None = None

    async def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        """Queue one frame (whole: concurrent senders never interleave) for this turn's write;
        the error of an earlier write, if one failed."""
        if self._error is not None:
            raise self._error
        frame = encode(header, payload)
        self._pending.append(frame)
        if len(frame) >= self.FLUSH_AT:
            self.flush()
        elif len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(self.flush)
        await self.writer.drain()

    def flush(self) -> None:
        """Write what is queued now."""
        frames, self._pending = self._pending, []
        if not frames or self._error is not None:
            return
        try:
            self.writer.writelines(frames)
        except (OSError, RuntimeError) as exc:  # the peer is gone: its reader says so too
            self._error = exc


async def read_frame(reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes] | None:
    """The next frame, or None at the end of the stream."""
    try:
        prefix = await reader.readexactly(_PREFIX.size)
    except asyncio.IncompleteReadError:
        return None
    head_len, body_len = _PREFIX.unpack(prefix)
    if head_len > MAX_HEADER or body_len > MAX_PAYLOAD:
        raise ProtocolError(f"frame too large: header {head_len} B, payload {body_len} B")
    try:
        head = await reader.readexactly(head_len)
        payload = await reader.readexactly(body_len) if body_len else b""
    except asyncio.IncompleteReadError:
        return None
    header = orjson.loads(head)
    if not isinstance(header, dict):
        raise ProtocolError("a frame header must be a JSON object")
    return header, payload
