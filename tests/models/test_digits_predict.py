"""The default digits version: holdout accuracy, and predictions from PNG, .npy and CSV."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from runtimes.catalog.plugins import LoadedModelPlugin, TrainResult
from tests.models.samples import csv_bytes, digits, npy, png

NEAREST, BILINEAR, BICUBIC = (
    Image.Resampling.NEAREST,
    Image.Resampling.BILINEAR,
    Image.Resampling.BICUBIC,
)


def labels(result: dict[str, Any]) -> list[int]:
    return [p["label"] for p in result["predictions"]]


def test_default_version_is_accurate_on_the_holdout(
    digits_plugin: LoadedModelPlugin, default_version: TrainResult, digits_model: Any
) -> None:
    data = digits()
    result = digits_plugin.predict(digits_model, data=npy(data.x_holdout))
    accuracy = float(np.mean(np.array(labels(result)) == data.y_holdout))
    print(f"\ndigits default version: holdout accuracy {accuracy:.4f} on {len(data.y_holdout)}")
    assert accuracy > 0.95
    assert default_version.score == pytest.approx(accuracy)
    assert default_version.metrics["n_holdout"] == len(data.y_holdout) == 450
    assert default_version.metrics["n_train"] == 1347
    assert default_version.data["kind"] == "builtin"


def test_prediction_has_label_and_probabilities(
    digits_plugin: LoadedModelPlugin, digits_model: Any
) -> None:
    data = digits()
    result = digits_plugin.predict(digits_model, data=npy(data.x_holdout[0]))
    assert result["input_format"] == "npy"
    (prediction,) = result["predictions"]
    assert prediction["label"] == data.y_holdout[0]
    probabilities = prediction["probabilities"]
    assert sorted(probabilities, key=int) == [str(d) for d in range(10)]
    assert sum(probabilities.values()) == pytest.approx(1.0)
    assert max(probabilities, key=probabilities.__getitem__) == str(prediction["label"])
    assert probabilities[str(prediction["label"])] > 0.5


RENDERINGS: dict[str, dict[str, Any]] = {
    "8x8 as is": {"box": (8, 8)},
    "64x64 white on black": {"box": (64, 64)},
    "64x64 black on white, smooth": {"box": (64, 64), "light": True, "resample": BILINEAR},
    "200x120 padded, black on white": {
        "box": (80, 80), "canvas": (200, 120), "offset": (30, -12), "light": True,
    },
    "200x120 padded, smooth, white on black, RGB": {
        "box": (96, 96), "canvas": (200, 120), "resample": BICUBIC, "mode": "RGB",
    },
    "28x28 like MNIST, black on white": {"box": (20, 20), "canvas": (28, 28), "light": True},
    "on a transparent canvas": {"box": (48, 48), "canvas": (64, 64), "mode": "RGBA"},
    "16-bit grey, black on white": {"box": (40, 40), "light": True, "mode": "I;16"},
}  # fmt: skip


@pytest.mark.parametrize("how", RENDERINGS)
def test_png_of_any_size_predicts_the_true_label(
    digits_plugin: LoadedModelPlugin, digits_model: Any, how: str
) -> None:
    data = digits()
    n = 40
    predicted = [
        labels(digits_plugin.predict(digits_model, data=png(row, **RENDERINGS[how])))[0]
        for row in data.x_holdout[:n]
    ]
    correct = int(np.sum(np.array(predicted) == data.y_holdout[:n]))
    print(f"\n{how}: {correct}/{n} correct")
    assert correct >= 0.9 * n
    # the first few are easy: each must be right
    assert predicted[:5] == list(data.y_holdout[:5])


@pytest.mark.parametrize("shape", [(64,), (8, 8), (5, 64), (5, 8, 8)])
def test_npy_shapes(digits_plugin: LoadedModelPlugin, digits_model: Any, shape: tuple[int]) -> None:
    data = digits()
    n = 5 if len(shape) > 1 and shape != (8, 8) else 1
    arr = data.x_holdout[:n].reshape(shape).astype(np.uint8)
    result = digits_plugin.predict(digits_model, data=npy(arr))
    assert labels(result) == list(data.y_holdout[:n])


@pytest.mark.parametrize("header", [True, False])
def test_csv_rows_with_or_without_header(
    digits_plugin: LoadedModelPlugin, digits_model: Any, header: bool
) -> None:
    data = digits()
    body = csv_bytes(data.x_holdout[:20], header=header)
    result = digits_plugin.predict(digits_model, data=body, filename="upload.csv")
    assert result["input_format"] == "csv"
    assert np.mean(np.array(labels(result)) == data.y_holdout[:20]) >= 0.95


def test_csv_with_a_label_column_is_predicted_without_it(
    digits_plugin: LoadedModelPlugin, digits_model: Any
) -> None:
    data = digits()
    body = csv_bytes(data.x_holdout[:10], data.y_holdout[:10])
    assert labels(digits_plugin.predict(digits_model, data=body)) == list(data.y_holdout[:10])


def test_format_can_be_forced(digits_plugin: LoadedModelPlugin, digits_model: Any) -> None:
    data = digits()
    body = npy(data.x_holdout[:1])
    result = digits_plugin.predict(digits_model, data=body, format="npy", filename="x.png")
    assert result["input_format"] == "npy"
    assert labels(result) == [data.y_holdout[0]]
