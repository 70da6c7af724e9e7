"""Labelled training sets (CSV with a label column, images by label, shipped digits), splits."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from deepfaas_digits.decode import (
    Features,
    canonical_rows,
    check_features,
    image_to_features,
    read_table,
    rows_to_array,
)
from deepfaas_digits.errors import DigitsInputError

Labels = NDArray[np.int64]

#: fewest samples of one class that still leave some for the holdout and for calibration folds
MIN_PER_CLASS: Final = 5
N_CLASSES_MAX: Final = 10


@dataclass(frozen=True)
class LabelledSet:
    """Canonical feature rows, their labels, and a description of where they came from."""

    x: Features
    y: Labels
    source: dict[str, Any]


@dataclass(frozen=True)
class Split:
    """A stratified train/holdout split of a labelled set."""

    x_train: Features
    y_train: Labels
    x_holdout: Features
    y_holdout: Labels


def builtin_set() -> LabelledSet:
    """The 1,797 digits that ship inside scikit-learn (no download)."""
    x, y = load_digits(return_X_y=True)
    return LabelledSet(
        canonical_rows(np.asarray(x, dtype=np.float64)),
        np.asarray(y, dtype=np.int64),
        {"kind": "builtin", "dataset": "sklearn.datasets.load_digits", "n_samples": len(y)},
    )


def csv_set(data: bytes, label_column: str = "label") -> LabelledSet:
    """A CSV with a header, a label column (0..9) and 64 feature columns on the 0..16 scale."""
    header, rows = read_table(data)
    if header is None:
        raise DigitsInputError(f"training CSV needs a header row naming a {label_column!r} column")
    names = [name.strip() for name in header]
    matches = [i for i, name in enumerate(names) if name.lower() == label_column.strip().lower()]
    if not matches:
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        raise DigitsInputError(f"CSV has no {label_column!r} column (columns: {shown})")
    col = matches[0]
    labels: list[int] = []
    for line, row in enumerate(rows, start=2):
        cell = row[col].strip() if col < len(row) else ""
        labels.append(_label(cell, f"CSV line {line}"))
    x = rows_to_array([row[:col] + row[col + 1 :] for row in rows], first_line=2)
    y = np.asarray(labels, dtype=np.int64)
    source = {
        "kind": "csv",
        "sha256": hashlib.sha256(data).hexdigest(),
        "label_column": names[col],
        "n_samples": len(y),
    }
    return LabelledSet(canonical_rows(check_features(x)), y, source)


def image_set(images: Mapping[int, Sequence[bytes]]) -> LabelledSet:
    """Images grouped by label, as uploaded under `<label>/` key prefixes."""
    rows: list[Features] = []
    labels: list[int] = []
    digest = hashlib.sha256()
    for label in sorted(images):
        if not 0 <= label < N_CLASSES_MAX:
            raise DigitsInputError(f"label {label} is not a digit 0..9", ("images", label))
        for i, blob in enumerate(images[label]):
            rows.append(image_to_features(blob, ("images", label, i)))
            labels.append(label)
            digest.update(f"{label}:{len(blob)}:".encode() + blob)
    if not rows:
        raise DigitsInputError("no training images given", ("images",))
    y = np.asarray(labels, dtype=np.int64)
    source = {"kind": "images", "sha256": digest.hexdigest(), "n_samples": len(y)}
    return LabelledSet(np.vstack(rows), y, source)


def split(data: LabelledSet, holdout: float, seed: int) -> Split:
    """Stratified split; refuses sets too small to train on and still evaluate fairly."""
    classes, counts = np.unique(data.y, return_counts=True)
    counts_by_class = {int(c): int(n) for c, n in zip(classes, counts, strict=True)}
    loc = ("images",) if data.source.get("kind") == "images" else ("data",)
    if len(classes) < 2:
        raise DigitsInputError(
            f"training needs at least 2 classes; got {len(classes)} ({counts_by_class})", loc
        )
    if few := {c: n for c, n in counts_by_class.items() if n < MIN_PER_CLASS}:
        raise DigitsInputError(
            f"too few samples: every class needs at least {MIN_PER_CLASS}; short: {few}", loc
        )
    n_holdout = math.ceil(holdout * len(data.y))
    if n_holdout < len(classes) or len(data.y) - n_holdout < 2 * len(classes):
        raise DigitsInputError(
            f"too few samples ({len(data.y)}) for a holdout of {holdout:g} over "
            f"{len(classes)} classes",
            loc,
        )
    x_tr, x_ho, y_tr, y_ho = train_test_split(
        data.x, data.y, test_size=n_holdout, stratify=data.y, random_state=seed
    )
    return Split(x_tr, y_tr, x_ho, y_ho)


def _label(cell: str, where: str) -> int:
    try:
        value = float(cell)
    except ValueError:
        value = math.nan
    if not value.is_integer() or not 0 <= value < N_CLASSES_MAX:
        raise DigitsInputError(f"{where}: label {cell[:40]!r} is not a digit 0..9")
    return int(value)
