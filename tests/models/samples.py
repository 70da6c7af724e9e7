"""Test inputs made from the shipped digits: PNGs at any size, .npy arrays, CSV text."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from functools import cache

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HOLDOUT = 0.25
SEED = 0


@dataclass(frozen=True)
class Digits:
    """The raw digits and the holdout split the plug-in's default version uses."""

    x: NDArray[np.float64]
    y: NDArray[np.int64]
    x_holdout: NDArray[np.float64]
    y_holdout: NDArray[np.int64]


@cache
def digits() -> Digits:
    """Raw 0..16 rows; the holdout is the one `train_default` evaluates on (same n, y, seed)."""
    x, y = load_digits(return_X_y=True)
    _, x_ho, _, y_ho = train_test_split(
        x, y, test_size=math.ceil(HOLDOUT * len(y)), stratify=y, random_state=SEED
    )
    return Digits(x, y, x_ho, y_ho)


def png(
    row: NDArray[np.float64],
    *,
    box: tuple[int, int] = (64, 64),
    canvas: tuple[int, int] | None = None,
    offset: tuple[int, int] = (0, 0),
    light: bool = False,
    resample: Image.Resampling = Image.Resampling.NEAREST,
    mode: str = "L",
) -> bytes:
    """Render an 8x8 row scaled to ``box`` on a ``canvas``; light = black ink on white."""
    ink = Image.fromarray(np.round(row.reshape(8, 8) / 16 * 255).astype(np.uint8)).resize(
        box, resample
    )
    size = canvas or box
    img = Image.new("L", size, 0)
    img.paste(ink, ((size[0] - box[0]) // 2 + offset[0], (size[1] - box[1]) // 2 + offset[1]))
    if light:
        img = Image.eval(img, lambda v: 255 - v)
    if mode == "RGBA":  # a drawing on a transparent canvas: colour black, ink in the alpha
        alpha = img if not light else Image.eval(img, lambda v: 255 - v)
        img = Image.merge("RGBA", (*Image.new("RGB", size, 0).split(), alpha))
    elif mode == "I;16":
        img = Image.fromarray(np.asarray(img, dtype=np.uint16) * 257)
    elif mode != "L":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def npy(arr: NDArray[np.generic]) -> bytes:
    """An array as .npy bytes."""
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def csv_bytes(
    x: NDArray[np.float64], y: NDArray[np.int64] | None = None, *, header: bool = True
) -> bytes:
    """Rows of 64 values, with a leading `label` column when ``y`` is given."""
    out = io.StringIO()
    writer = csv.writer(out)
    if header:
        writer.writerow((["label"] if y is not None else []) + [f"pixel_{i}" for i in range(64)])
    for i, row in enumerate(x):
        writer.writerow(([int(y[i])] if y is not None else []) + [f"{v:g}" for v in row])
    return out.getvalue().encode()
