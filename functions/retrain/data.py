"""Training data from the object store: a CSV file, or images under `<set>/<label>/` keys."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

from functions.retrain.models import READY_MARKER, RetrainInput
from runtimes.errors import ModelInputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class TrainingData:
    """The plug-in's data arguments (`data` or `images`) and what lineage records of them."""

    args: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)


async def gather(inp: RetrainInput, storage: Any) -> TrainingData:
    """Read what the input points at, within `max_bytes`."""
    if inp.data is not None:
        return TrainingData({"data": inp.data}, {"source": "inline", "bytes": len(inp.data)})
    if inp.object is None:
        return TrainingData({}, {"source": "plugin default data"})
    if storage is None:
        raise RuntimeError("this worker has no object store to read training data from")
    obj = inp.object
    name = posixpath.basename(obj.key)
    if name.lower().endswith(".csv"):
        body = await _read(storage, obj.bucket, obj.key, inp.max_bytes, inp.name)
        source = {"source": f"{obj.bucket}/{obj.key}", "etag": obj.etag, "bytes": len(body)}
        return TrainingData({"data": body}, source)
    if name == READY_MARKER:
        return await _image_set(inp, storage, posixpath.dirname(obj.key))
    raise ModelInputError(
        f"cannot train on {obj.key!r}: upload a .csv with a label column, or images under "
        f"<set>/<label>/ and then <set>/{READY_MARKER} to train on the set",
        model=inp.name,
        key=obj.key,
    )


async def _image_set(inp: RetrainInput, storage: Any, folder: str) -> TrainingData:
    prefix = f"{folder}/" if folder else ""
    images: dict[int, list[bytes]] = {}
    total, skipped = 0, 0
    marker: str | None = None
    while True:
        page = await storage.list(inp.object.bucket if inp.object else "", prefix, None, marker)
        for summary in page.objects:
            label_part, _, rest = summary.key[len(prefix) :].partition("/")
            if not rest or not label_part.isdigit() or not rest.lower().endswith(IMAGE_SUFFIXES):
                skipped += summary.key != f"{prefix}{READY_MARKER}"
                continue
            total += summary.size
            if total > inp.max_bytes:
                raise ModelInputError(
                    f"the image set under {prefix!r} is over {inp.max_bytes} bytes",
                    model=inp.name,
                )
            body = await _read(storage, summary.bucket, summary.key, inp.max_bytes, inp.name)
            images.setdefault(int(label_part), []).append(body)
        if not page.is_truncated or not page.next_marker:
            break
        marker = page.next_marker
    if not images:
        raise ModelInputError(
            f"no images under {prefix or 'the bucket root'}<label>/ next to {READY_MARKER}",
            model=inp.name,
        )
    lineage = {
        "source": f"{inp.object.bucket if inp.object else ''}/{prefix}",
        "images": sum(len(v) for v in images.values()),
        "labels": sorted(images),
        "skipped": skipped,
        "bytes": total,
    }
    return TrainingData({"images": images}, lineage)


async def _read(storage: Any, bucket: str, key: str, limit: int, model: str) -> bytes:
    info, stream = await storage.get(bucket, key)
    if info.size > limit:
        await stream.aclose()
        raise ModelInputError(f"{key} is {info.size} bytes, over {limit}", model=model)
    return b"".join([chunk async for chunk in stream])
