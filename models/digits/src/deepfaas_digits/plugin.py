"""The digits model plug-in: what the `deepfaas.models` entry point `digits` resolves to."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final

import numpy as np

from deepfaas_digits import classifier
from deepfaas_digits.args import PredictArgs, TrainArgs
from deepfaas_digits.classifier import Estimator, EstimatorFactory
from deepfaas_digits.data import LabelledSet, builtin_set, csv_set, image_set, split
from deepfaas_digits.decode import decode_features
from deepfaas_digits.errors import DigitsInputError

logger = logging.getLogger(__name__)

DISTRIBUTION: Final = "deepfaas-digits"


def _version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # imported from a source tree, not installed
        return "0+unknown"


@dataclass(frozen=True)
class TrainOutput:
    """A trained version: artifact bytes, holdout metrics, and the data it came from."""

    artifact: bytes
    metrics: dict[str, float]
    data: dict[str, Any] = field(default_factory=dict)


class DigitsPlugin:
    """Handwritten digit classifier on 8x8 grey images; keeps deepfaas's `ModelPlugin` contract."""

    predict_args: type[PredictArgs] = PredictArgs

    def __init__(
        self,
        *,
        name: str = "digits",
        framework: str = "scikit-learn",
        build: EstimatorFactory = classifier.build_svc,
        train_args: type[TrainArgs] = TrainArgs,
    ) -> None:
        self.name = name
        self.framework = framework
        self.build = build
        self.train_args = train_args
        self.version = _version()

    def get_metadata(self) -> dict[str, Any]:
        """DEEPaaS-style metadata; `metric` is the holdout metric a promotion gate compares."""
        return {
            "name": self.name,
            "version": self.version,
            "description": "Classifies handwritten digits 0-9 from images, 8x8 arrays or CSV rows; "
            "trained on the digits data set shipped with scikit-learn (UCI optdigits).",
            "keywords": ["digits", "image classification", "handwriting", self.framework],
            "license": "unspecified",
            "framework": self.framework,
            "input": "one file: an image of one digit (any size, light or dark background), "
            "a .npy array (64,), (8, 8), (n, 64) or (n, 8, 8), or CSV rows of 64 values 0..16",
            "output": '{"predictions": [{"label": int, "probabilities": {"0": p, ...}}], '
            '"input_format": str}',
            "metric": "accuracy",
        }

    def check_artifact(self, artifact: bytes) -> None:
        """``ValueError`` for an artifact that is not skops of trusted types; builds nothing."""
        classifier.check(artifact)

    def load(self, artifact: bytes) -> Estimator:
        """Rebuild the estimator from skops artifact bytes, trusted types only (never pickle)."""
        return classifier.loads(artifact)

    def predict(self, model: Any, **args: Any) -> dict[str, Any]:
        """Label and class probabilities for every digit in the uploaded file."""
        return self.predict_batch(model, [args])[0]

    def predict_batch(self, model: Any, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`predict` for several uploads with one `predict_proba` over all their rows (the
        model's per-call overhead paid once per batch); the same answers, in order."""
        decoded = []
        for args in inputs:
            opts = self.predict_args.model_validate(args)
            decoded.append(decode_features(opts.data, opts.format, opts.filename))
        proba = model.predict_proba(np.vstack([rows for _, rows in decoded]))
        classes = [int(c) for c in model.classes_]
        answers, start = [], 0
        for fmt, rows in decoded:
            predictions = [
                {
                    "label": classes[int(np.argmax(row))],
                    "probabilities": {str(c): float(p) for c, p in zip(classes, row, strict=True)},
                }
                for row in proba[start : start + len(rows)]
            ]
            start += len(rows)
            answers.append({"predictions": predictions, "input_format": fmt})
        return answers

    def train(self, **args: Any) -> TrainOutput:
        """Fit a new version on labelled data and evaluate it on a stratified holdout."""
        opts = self.train_args.model_validate(args)
        if opts.data is not None:
            labelled = csv_set(opts.data, opts.label_column)
        else:
            labelled = image_set(opts.images or {})
        return self._fit(labelled, opts)

    def train_default(self) -> TrainOutput:
        """The first version: fit on the digits shipped with scikit-learn, default arguments."""
        # construct: the defaults, without the check that asks for exactly one data source
        return self._fit(builtin_set(), self.train_args.model_construct())

    def _fit(self, labelled: LabelledSet, opts: TrainArgs) -> TrainOutput:
        parts = split(labelled, opts.holdout, opts.seed)
        estimator = self.build(opts, parts.y_train)
        started = time.perf_counter()
        try:
            estimator.fit(parts.x_train, parts.y_train)
        except ValueError as exc:  # what the data can still get wrong past our checks
            raise DigitsInputError(f"cannot fit on this data: {exc}") from exc
        seconds = time.perf_counter() - started
        predicted = np.asarray(estimator.classes_)[
            np.argmax(estimator.predict_proba(parts.x_holdout), axis=1)
        ]
        accuracy = float(np.mean(predicted == parts.y_holdout))
        hyper = opts.model_dump(exclude={"data", "images"})
        artifact = classifier.dumps(
            estimator, {"plugin": self.name, "plugin_version": self.version, "args": hyper}
        )
        metrics = {
            "accuracy": accuracy,
            "n_train": len(parts.y_train),
            "n_holdout": len(parts.y_holdout),
            "train_seconds": seconds,
        }
        classes, counts = np.unique(labelled.y, return_counts=True)
        lineage = {
            **labelled.source,
            "class_counts": {str(int(c)): int(n) for c, n in zip(classes, counts, strict=True)},
            "args": hyper,
            "plugin_version": self.version,
            "framework": self.framework,
        }
        logger.info("trained %s: holdout accuracy %.4f in %.2f s", self.name, accuracy, seconds)
        return TrainOutput(artifact=artifact, metrics=metrics, data=lineage)


#: the object the `deepfaas.models` entry point `digits` names
plugin = DigitsPlugin()
