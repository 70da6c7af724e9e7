"""Uploaded bytes (images, .npy arrays, CSV rows) to the model's rows of 64 values, 0..16."""

from __future__ import annotations

import csv
import io
import logging
from typing import Any, Final, Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from deepfaas_digits.errors import DigitsInputError

logger = logging.getLogger(__name__)

InputFormat = Literal["image", "npy", "csv"]
Features = NDArray[np.float64]

SIDE: Final = 8
N_FEATURES: Final = SIDE * SIDE
MAX_VALUE: Final = 16.0
MAX_ROWS: Final = 100_000
MAX_PIXELS: Final = 4096 * 4096
#: the data set's 8x8 values count "on" pixels in 4x4 blocks of a 32x32 bitmap; we rebuild that
FINE: Final = 32
#: ink level (0..1, after contrast stretching) that counts for the digit's bounding box
INK_THRESHOLD: Final = 0.1

PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"
NPY_MAGIC: Final = b"\x93NUMPY"
_IMAGE_MAGICS: Final = (PNG_MAGIC, b"\xff\xd8\xff", b"GIF87a", b"GIF89a")
_SUFFIXES: Final[dict[str, InputFormat]] = {
    ".png": "image", ".jpg": "image", ".jpeg": "image", ".gif": "image", ".bmp": "image",
    ".webp": "image", ".tif": "image", ".tiff": "image", ".npy": "npy", ".csv": "csv",
    ".txt": "csv",
}  # fmt: skip


def detect_format(data: bytes, filename: str | None = None) -> InputFormat:
    """Tell an image, a .npy array and CSV text apart by magic bytes, then by file suffix."""
    if data.startswith(_IMAGE_MAGICS):
        return "image"
    if data.startswith(NPY_MAGIC):
        return "npy"
    if filename:
        suffix = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        if suffix in _SUFFIXES:
            return _SUFFIXES[suffix]
    head = data[:4096]
    if b"\x00" in head or not _is_utf8_prefix(head):
        raise DigitsInputError("unrecognised input: expected a PNG image, a .npy array or CSV text")
    return "csv"


def decode_features(
    data: bytes, fmt: InputFormat | Literal["auto"] = "auto", filename: str | None = None
) -> tuple[InputFormat, Features]:
    """Decode one upload to the model's (n, 64) canonical rows; says which format it was."""
    found = detect_format(data, filename) if fmt == "auto" else fmt
    if found == "image":
        return found, image_to_features(data)
    if found == "npy":
        return found, canonical_rows(npy_to_features(data))
    return found, canonical_rows(csv_to_features(data))


def canonical_rows(rows: Features, loc: tuple[str | int, ...] = ("data",)) -> Features:
    """Re-frame 8x8 rows as images are framed: digit cropped, fitted to the box and centred.

    The data set centres digits only roughly; framing every input (arrays, CSV rows, images and
    training rows) the same way makes an image of a digit land where the model expects it.
    """
    out = np.empty_like(rows)
    for i, row in enumerate(rows):
        peak = float(row.max())
        if peak <= 0:
            raise DigitsInputError(f"row {i + 1} is blank (all zeros): no digit to classify", loc)
        out[i] = _to_grid(row.reshape(SIDE, SIDE) / peak).reshape(N_FEATURES)
    return out


def image_to_features(data: bytes, loc: tuple[str | int, ...] = ("data",)) -> Features:
    """One digit image of any size and mode to a canonical (1, 64) row on the 0..16 scale."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:
                raise DigitsInputError(
                    f"image of {img.width}x{img.height} pixels is too large "
                    f"(at most {MAX_PIXELS} pixels)",
                    loc,
                )
            img.load()
            grey = _grey(img)
    except DigitsInputError:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... for bad files
        raise DigitsInputError(f"corrupt or unreadable image: {exc}", loc) from exc
    ink = _ink(grey, loc)
    return _to_grid(ink).reshape(1, N_FEATURES)


def npy_to_features(data: bytes) -> Features:
    """A .npy array of shape (64,), (8, 8), (n, 64) or (n, 8, 8) to an (n, 64) float array."""
    try:
        # allow_pickle=False: an object array would run code from the upload when loaded
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:
        raise DigitsInputError(f"not a readable .npy array: {exc}") from exc
    if not isinstance(arr, np.ndarray):
        raise DigitsInputError("expected a single .npy array, not an .npz archive")
    if arr.dtype.kind not in "biuf":
        raise DigitsInputError(f"the array must hold numbers, not dtype {arr.dtype}")
    shape = arr.shape
    if shape in ((N_FEATURES,), (SIDE, SIDE)):
        rows = arr.reshape(1, N_FEATURES)
    elif (len(shape) == 2 and shape[1] == N_FEATURES) or (
        len(shape) == 3 and shape[1:] == (SIDE, SIDE)
    ):
        rows = arr.reshape(shape[0], N_FEATURES)
    else:
        raise DigitsInputError(
            f"array of shape {shape} is not digits: expected (64,), (8, 8), (n, 64) or (n, 8, 8)"
        )
    return check_features(rows.astype(np.float64))


def csv_to_features(data: bytes) -> Features:
    """CSV rows of 64 values (header optional; a `label` column in a header is ignored)."""
    header, rows = read_table(data)
    if header is not None and "label" in (name.strip().lower() for name in header):
        drop = [name.strip().lower() for name in header].index("label")
        rows = [row[:drop] + row[drop + 1 :] for row in rows]
    return check_features(rows_to_array(rows, first_line=2 if header else 1))


def read_table(data: bytes) -> tuple[list[str] | None, list[list[str]]]:
    """Split CSV bytes into a header (when the first row is not all numbers) and its rows."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DigitsInputError(f"CSV is not UTF-8 text: {exc}") from exc
    first = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first.count)
    rows = [row for row in csv.reader(io.StringIO(text), delimiter=delimiter) if any(row)]
    if not rows:
        raise DigitsInputError("CSV has no rows")
    header = rows[0] if not all(_is_number(cell) for cell in rows[0]) else None
    body = rows[1:] if header is not None else rows
    if not body:
        raise DigitsInputError("CSV has a header but no rows")
    if len(body) > MAX_ROWS:
        raise DigitsInputError(f"CSV has {len(body)} rows; at most {MAX_ROWS} are accepted")
    return header, body


def rows_to_array(rows: list[list[str]], first_line: int = 1) -> Features:
    """Parse rows of 64 numeric cells; an error names the line and column at fault."""
    out = np.empty((len(rows), N_FEATURES), dtype=np.float64)
    for i, row in enumerate(rows):
        line = first_line + i
        if len(row) != N_FEATURES:
            raise DigitsInputError(f"CSV line {line} has {len(row)} values; expected {N_FEATURES}")
        for j, cell in enumerate(row):
            try:
                out[i, j] = float(cell)
            except ValueError:
                raise DigitsInputError(
                    f"CSV line {line}, column {j + 1}: {cell.strip()[:40]!r} is not a number"
                ) from None
    return out


def check_features(rows: Features, loc: tuple[str | int, ...] = ("data",)) -> Features:
    """Refuse rows that are not finite numbers on the data set's 0..16 scale."""
    if len(rows) == 0:
        raise DigitsInputError("no rows to classify", loc)
    if len(rows) > MAX_ROWS:
        raise DigitsInputError(f"{len(rows)} rows; at most {MAX_ROWS} are accepted", loc)
    if not np.isfinite(rows).all():
        raise DigitsInputError("values must be finite numbers (found NaN or infinity)", loc)
    low, high = float(rows.min()), float(rows.max())
    if low < 0 or high > MAX_VALUE:
        raise DigitsInputError(
            f"values must lie in 0..16, the scale of the digits data set; found {low:g}..{high:g}",
            loc,
        )
    return rows


def _grey(img: Image.Image) -> NDArray[np.float64]:
    """Luminance as floats; for a drawing on a transparent canvas, its opacity."""
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        alpha = np.asarray(img.convert("RGBA"), dtype=np.float64)[..., 3]
        if alpha.min() < 255:
            return alpha
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        return np.asarray(img, dtype=np.float64)
    return np.asarray(img.convert("L"), dtype=np.float64)


def _ink(grey: NDArray[np.float64], loc: tuple[str | int, ...]) -> NDArray[np.float64]:
    """Ink from 0 (background) to 1 (stroke), whichever way round the image is drawn."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    background = float(np.median(border))
    low, high = float(grey.min()), float(grey.max())
    if high - low <= 1e-9 * max(1.0, abs(high)):
        raise DigitsInputError("the image is blank: no digit is visible", loc)
    if background - low > high - background:  # light background, dark strokes
        ink = (background - grey) / (background - low)
    else:
        ink = (grey - background) / (high - background)
    return np.clip(ink, 0.0, 1.0)


def _to_grid(ink: NDArray[np.float64]) -> NDArray[np.float64]:
    """Crop to the digit, fit it in a 32x32 box (aspect kept, centred), count 4x4 blocks."""
    rows = np.flatnonzero((ink > INK_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((ink > INK_THRESHOLD).any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = crop.shape
    scale = FINE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # BOX averages the source pixels under each target pixel: anti-aliased when shrinking
    fitted = np.asarray(
        Image.fromarray(crop.astype(np.float32)).resize(size, Image.Resampling.BOX),
        dtype=np.float64,
    )
    canvas = np.zeros((FINE, FINE))
    top, left = (FINE - size[1]) // 2, (FINE - size[0]) // 2
    canvas[top : top + size[1], left : left + size[0]] = np.clip(fitted, 0.0, 1.0)
    block = FINE // SIDE
    grid: NDArray[Any] = canvas.reshape(SIDE, block, SIDE, block).mean(axis=(1, 3))
    return grid * MAX_VALUE


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _is_utf8_prefix(data: bytes) -> bool:
    """True when ``data`` is UTF-8 text, perhaps with its last character cut short."""
    for cut in range(4):
        try:
            data[: len(data) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return True
    return False
