"""Read an uploaded image from storage, return its PNG thumbnail (written to the output target)."""

from __future__ import annotations

import asyncio
import io

from PIL import Image, UnidentifiedImageError

from functions.errors import FunctionError, InvalidInputError
from functions.thumbnail.models import ThumbnailInput
from runtimes.types import Context


class ThumbnailError(InvalidInputError, ValueError):
    """The object is not an image this function can read (final: not retried)."""


async def handle(inp: ThumbnailInput, ctx: Context) -> bytes:
    """Stream the object in, shrink it, return PNG bytes (the trigger's output target gets them)."""
    if ctx.storage is None:
        raise FunctionError("the worker has no object store")
    info, stream = await ctx.storage.get(inp.object.bucket, inp.object.key)
    if info.size > inp.max_bytes:
        await stream.aclose()
        raise ThumbnailError(f"{inp.object.key} is {info.size} bytes, over {inp.max_bytes}")
    chunks = [chunk async for chunk in stream]
    png = await asyncio.to_thread(_thumbnail, b"".join(chunks), inp.size)
    ctx.logger.info("thumbnail of %s/%s: %d bytes", info.bucket, info.key, len(png))
    return png


def _thumbnail(data: bytes, size: int) -> bytes:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.thumbnail((size, size))
            out = io.BytesIO()
            image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB").save(out, "PNG")
    except (UnidentifiedImageError, OSError) as exc:
        raise ThumbnailError(f"not a readable image: {exc}") from exc
    return out.getvalue()
