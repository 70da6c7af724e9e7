"""The estimator behind the plug-in and its artifact format.

The seam for other frameworks is `Estimator`: anything with scikit-learn's `fit`,
`predict_proba` and `classes_` (a PyTorch CNN wrapped the way skorch wraps one) can be built
by a factory and handed to `DigitsPlugin`; decoding, splitting, metrics and artifacts stay.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from collections.abc import Callable
from typing import Any, Final, Protocol

import numpy as np
import sklearn
from numpy.typing import NDArray
from sklearn.calibration import CalibratedClassifierCV
from sklearn.svm import SVC

from deepfaas_digits.args import TrainArgs
from deepfaas_digits.decode import Features

logger = logging.getLogger(__name__)

MAGIC: Final = b"deepfaas-digits-artifact\n"
#: bump when the artifact layout or the preprocessing (decode.canonical_rows) changes
FORMAT_VERSION: Final = 1
MAX_CALIBRATION_FOLDS: Final = 5


class Estimator(Protocol):
    """What the plug-in needs from a classifier (scikit-learn's estimator API)."""

    classes_: NDArray[Any]

    def fit(self, x: Features, y: NDArray[np.int64]) -> Any: ...

    def predict_proba(self, x: Features) -> NDArray[np.float64]: ...


#: builds an unfitted estimator from the validated train arguments and the training labels
EstimatorFactory = Callable[[TrainArgs, NDArray[np.int64]], Estimator]


def build_svc(args: TrainArgs, y_train: NDArray[np.int64]) -> Estimator:
    """RBF SVM with sigmoid-calibrated probabilities (SVC's `probability=True` is deprecated)."""
    # gamma="scale" adapts to the feature variance, so no scaler is needed for 0..16 values;
    # ensemble=False keeps one SVC fit on all training rows, calibrated on CV folds: as many
    # stratified folds as the rarest class allows, at most five.
    folds = int(min(MAX_CALIBRATION_FOLDS, np.unique(y_train, return_counts=True)[1].min()))
    estimator: Estimator = CalibratedClassifierCV(
        SVC(C=args.c, gamma="scale"), method="sigmoid", ensemble=False, cv=folds
    )
    return estimator


def dumps(estimator: Estimator, info: dict[str, Any]) -> bytes:
    """Artifact bytes: a magic line, a JSON header line, then the pickled estimator."""
    payload = pickle.dumps(estimator, protocol=pickle.HIGHEST_PROTOCOL)
    header = {
        "format": FORMAT_VERSION,
        "sklearn": sklearn.__version__,
        "classes": [int(c) for c in estimator.classes_],
        "sha256": hashlib.sha256(payload).hexdigest(),
        **info,
    }
    return MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload


def read_header(artifact: bytes) -> dict[str, Any]:
    """The JSON header of an artifact (format, versions, classes, checksum)."""
    if not artifact.startswith(MAGIC):
        raise ValueError("not a digits model artifact (bad magic)")
    line, sep, _ = artifact[len(MAGIC) :].partition(b"\n")
    try:
        header = json.loads(line) if sep else None
    except ValueError:
        header = None
    if not isinstance(header, dict):
        raise ValueError("digits artifact header is unreadable")
    return header


def loads(artifact: bytes) -> Estimator:
    """Check an artifact's header and checksum, then unpickle the estimator.

    Trust: unpickling runs code named in the payload, so artifacts must come only from the
    platform's own catalog (written by `train`), never from an upload. The checksum catches
    corruption, not tampering.
    """
    header = read_header(artifact)
    if header.get("format") != FORMAT_VERSION:
        raise ValueError(
            f"digits artifact format {header.get('format')!r} is not supported "
            f"(this plug-in reads format {FORMAT_VERSION})"
        )
    payload = artifact[len(MAGIC) :].partition(b"\n")[2]
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise ValueError("digits artifact is corrupt: checksum mismatch")
    if header.get("sklearn") != sklearn.__version__:
        logger.warning(
            "digits artifact was made with scikit-learn %s; running %s",
            header.get("sklearn"),
            sklearn.__version__,
        )
    estimator = pickle.loads(payload)  # trusted: see the docstring
    if not callable(getattr(estimator, "predict_proba", None)) or not hasattr(
        estimator, "classes_"
    ):
        raise ValueError("digits artifact does not hold a fitted classifier")
    return estimator  # type: ignore[no-any-return]
