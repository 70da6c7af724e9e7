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
