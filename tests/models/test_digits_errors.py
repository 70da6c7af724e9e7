"""Input the digits model cannot use: each gives a clear `ModelInputError`, never a crash."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from runtimes.catalog.plugins import LoadedModelPlugin
from runtimes.errors import ModelInputError
from tests.models.samples import csv_bytes, digits, npy, png


def predict_error(plugin: LoadedModelPlugin, model: Any, **args: Any) -> ModelInputError:
    with pytest.raises(ModelInputError) as caught:
        plugin.predict(model, **args)
    return caught.value


def train_error(plugin: LoadedModelPlugin, **args: Any) -> ModelInputError:
    with pytest.raises(ModelInputError) as caught:
        plugin.train(**args)
    return caught.value


def test_corrupt_png(digits_plugin: LoadedModelPlugin, digits_model: Any) -> None:
    good = png(digits().x[0])
    for bad in (good[:40], good[:8] + b"\x00" * 60, good[:20] + b"garbage" + good[27:]):
        err = predict_error(digits_plugin, digits_model, data=bad)
        assert "corrupt or unreadable image" in err.message
        assert err.fields["errors"][0]["loc"] == ["data"]
        assert err.fields["model"] == "digits"
        assert err.code == "invalid"


def test_blank_image(digits_plugin: LoadedModelPlugin, digits_model: Any) -> None:
    buf = io.BytesIO()
    Image.new("L", (30, 30), 255).save(buf, "PNG")
    err = predict_error(digits_plugin, digits_model, data=buf.getvalue())
    assert "blank" in err.message


@pytest.mark.parametrize("shape", [(63,), (8, 7), (3, 65), (2, 4, 16), (1, 1, 8, 8), (0, 64)])
def test_wrong_shaped_array(
    digits_plugin: LoadedModelPlugin, digits_model: Any, shape: tuple[int, ...]
) -> None:
    err = predict_error(digits_plugin, digits_model, data=npy(np.zeros(shape)))
    expected = "no rows" if shape == (0, 64) else f"array of shape {shape} is not digits"
    assert expected in err.message


def test_array_values_off_the_scale(digits_plugin: LoadedModelPlugin, digits_model: Any) -> None:
    err = predict_error(digits_plugin, digits_model, data=npy(digits().x[:2] * 16))
    assert "values must lie in 0..16" in err.message
    err = predict_error(digits_plugin, digits_model, data=npy(np.full(64, np.nan)))
    assert "finite" in err.message


def test_object_array_is_not_unpickled(digits_plugin: LoadedModelPlugin, digits_model: Any) -> None:
    buf = io.BytesIO()
    np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    err = predict_error(digits_plugin, digits_model, data=buf.getvalue())
    assert "not a readable .npy array" in err.message


def test_non_numeric_csv(digits_plugin: LoadedModelPlugin, digits_model: Any) -> None:
    rows = csv_bytes(digits().x[:3], header=False).decode().splitlines()
    rows[1] = rows[1].replace("0", "zero", 1)
    err = predict_error(digits_plugin, digits_model, data="\n".join(rows).encode())
    assert "CSV line 2" in err.message
    assert "'zero' is not a number" in err.message


def test_csv_with_wrong_width(digits_plugin: LoadedModelPlugin, digits_model: Any) -> None:
    err = predict_error(digits_plugin, digits_model, data=b"1,2,3\n4,5,6\n")
    assert "CSV line 1 has 3 values; expected 64" in err.message


def test_binary_garbage(digits_plugin: LoadedModelPlugin, digits_model: Any) -> None:
    err = predict_error(digits_plugin, digits_model, data=b"\x00\x01\xfe\xff" * 10)
    assert "unrecognised input" in err.message


def test_predict_arguments_are_validated(
    digits_plugin: LoadedModelPlugin, digits_model: Any
) -> None:
    err = predict_error(digits_plugin, digits_model, data=b"")
    assert err.fields["errors"][0]["loc"] == ["data"]
    err = predict_error(digits_plugin, digits_model, data=b"1", format="jpeg2000", colour="red")
    assert {tuple(e["loc"]) for e in err.fields["errors"]} == {("format",), ("colour",)}
    assert "invalid predict arguments for model 'digits'" in err.message


def test_csv_without_the_label_column(digits_plugin: LoadedModelPlugin) -> None:
    data = digits()
    err = train_error(digits_plugin, data=csv_bytes(data.x[:100], header=True))
    assert "CSV has no 'label' column" in err.message
    assert "pixel_0" in err.message
    err = train_error(digits_plugin, data=csv_bytes(data.x[:100], data.y[:100], header=False))
    assert "needs a header row" in err.message


def test_labels_must_be_digits(digits_plugin: LoadedModelPlugin) -> None:
    data = digits()
    y = data.y[:100].copy()
    y[4] = 12
    err = train_error(digits_plugin, data=csv_bytes(data.x[:100], y))
    assert "CSV line 6: label '12' is not a digit 0..9" in err.message


def test_too_few_samples_or_classes(digits_plugin: LoadedModelPlugin) -> None:
    data = digits()
    ones = data.y == 1
    err = train_error(digits_plugin, data=csv_bytes(data.x[ones][:50], data.y[ones][:50]))
    assert "at least 2 classes" in err.message
    err = train_error(digits_plugin, data=csv_bytes(data.x[:12], data.y[:12]))
    assert "every class needs at least 5" in err.message


def test_a_corrupt_training_image_is_named(digits_plugin: LoadedModelPlugin) -> None:
    x = digits().x
    images = {0: [png(x[0])] * 6, 1: [png(x[1])] * 5 + [b"\x89PNG\r\n\x1a\nbroken"]}
    err = train_error(digits_plugin, images=images)
    assert err.fields["errors"][0]["loc"] == ["images", 1, 5]
    assert "corrupt or unreadable image" in err.message


def test_train_needs_exactly_one_source(digits_plugin: LoadedModelPlugin) -> None:
    err = train_error(digits_plugin)
    assert "exactly one of `data`" in err.message
    err = train_error(digits_plugin, data=b"label\n1", images={1: [b"x"]})
    assert "exactly one of `data`" in err.message
    err = train_error(digits_plugin, images={11: [b"x"]}, holdout=0.9)
    assert {e["loc"][0] for e in err.fields["errors"]} == {"images", "holdout"}
