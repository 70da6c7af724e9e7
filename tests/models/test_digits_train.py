"""Retraining the digits model: CSV with a label column, images by label, artifacts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from runtimes.catalog.plugins import LoadedModelPlugin, TrainResult
from runtimes.errors import ArtifactRefusedError, ModelError
from tests.models.samples import csv_bytes, digits, npy, png

N = 600  # enough rows for a good model, few enough to train in a fraction of a second


def test_csv_with_labels_trains_a_good_model_and_shuffled_labels_a_bad_one(
    digits_plugin: LoadedModelPlugin,
) -> None:
    data = digits()
    good = digits_plugin.train(data=csv_bytes(data.x[:N], data.y[:N]))
    shuffled_y = np.random.default_rng(7).permutation(data.y[:N])
    bad = digits_plugin.train(data=csv_bytes(data.x[:N], shuffled_y))
    print(f"\nretrained on {N} rows: accuracy {good.score:.3f}; shuffled labels {bad.score:.3f}")
    assert good.score > 0.9
    assert bad.score < 0.3
    assert good.score - bad.score > 0.5
    assert good.metrics["n_train"] + good.metrics["n_holdout"] == N
    assert good.metrics["n_holdout"] == pytest.approx(N * 0.25, abs=1)


def test_train_result_carries_lineage(digits_plugin: LoadedModelPlugin) -> None:
    data = digits()
    body = csv_bytes(data.x[:N], data.y[:N])
    result = digits_plugin.train(data=body, holdout=0.2, seed=3, c=5.0)
    assert result.model == "digits"
    assert result.plugin_version == digits_plugin.version != ""
    assert result.metric == "accuracy"
    assert result.data["kind"] == "csv"
    assert len(result.data["sha256"]) == 64
    assert result.data["args"] == {"label_column": "label", "holdout": 0.2, "seed": 3, "c": 5.0}
    assert sum(result.data["class_counts"].values()) == N
    assert result.metrics["n_holdout"] == N * 0.2


def test_a_retrained_artifact_loads_and_predicts(digits_plugin: LoadedModelPlugin) -> None:
    data = digits()
    result = digits_plugin.train(data=csv_bytes(data.x[:N], data.y[:N]))
    model = digits_plugin.load(result.artifact)
    predicted = digits_plugin.predict(model, data=npy(data.x[N : N + 50]))["predictions"]
    assert np.mean([p["label"] for p in predicted] == data.y[N : N + 50]) > 0.9


def test_images_by_label_train_a_model(digits_plugin: LoadedModelPlugin) -> None:
    data = digits()
    images: dict[int, list[bytes]] = {}
    for row, label in zip(data.x[:300], data.y[:300], strict=True):
        images.setdefault(int(label), []).append(png(row, box=(32, 32), light=bool(label % 2)))
    result = digits_plugin.train(images=images)
    print(f"\ntrained on 300 PNGs by label: holdout accuracy {result.score:.3f}")
    assert result.data["kind"] == "images"
    assert result.score > 0.85


def test_a_subset_of_classes_predicts_only_those(digits_plugin: LoadedModelPlugin) -> None:
    data = digits()
    keep = np.isin(data.y, [0, 1, 7])
    result = digits_plugin.train(data=csv_bytes(data.x[keep][:150], data.y[keep][:150]))
    model = digits_plugin.load(result.artifact)
    (prediction,) = digits_plugin.predict(model, data=npy(data.x[keep][200]))["predictions"]
    assert set(prediction["probabilities"]) == {"0", "1", "7"}


def test_default_version_round_trips(
    digits_plugin: LoadedModelPlugin, default_version: TrainResult, digits_model: Any
) -> None:
    again = digits_plugin.load(default_version.artifact)
    body = npy(digits().x_holdout[:30])
    assert digits_plugin.predict(again, data=body) == digits_plugin.predict(digits_model, data=body)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda a: b"\x80\x04junk", "not a digits model artifact"),
        (lambda a: a[:-10], "checksum mismatch"),
        (lambda a: a.replace(b'"format": 2', b'"format": 99', 1), "format 99 is not supported"),
    ],
)
def test_bad_artifacts_are_refused(
    digits_plugin: LoadedModelPlugin, default_version: TrainResult, mangle: Any, message: str
) -> None:
    with pytest.raises(ModelError, match=message) as caught:
        digits_plugin.load(mangle(default_version.artifact))
    # a bad artifact is not bad user input, and loading it again is refused the same way
    assert type(caught.value) is ArtifactRefusedError
    assert caught.value.fields["stage"] == "load"
