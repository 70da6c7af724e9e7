"""The estimator behind the plug-in and its artifact format.

An artifact is a magic line, a JSON header line, then the estimator saved with skops
(`skops.io`), never pickle: loading rebuilds only the types in `TRUSTED_TYPES` (plus the
numpy/scipy/builtin types skops trusts itself), so an artifact a user registered cannot run code
when it is loaded. Format 1 artifacts (pickled, before skops) are refused, not unpickled.

The seam for other frameworks is `Estimator`: anything with scikit-learn's `fit`,
`predict_proba` and `classes_` (a PyTorch CNN wrapped the way skorch wraps one) can be built
by a factory and handed to `DigitsPlugin`; decoding, splitting, metrics and artifacts stay.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

import numpy as np
import sklearn
import skops.io
from numpy.typing import NDArray
from sklearn.calibration import CalibratedClassifierCV
from sklearn.svm import SVC

from deepfaas_digits.args import TrainArgs
from deepfaas_digits.decode import Features

logger = logging.getLogger(__name__)

MAGIC: Final = b"deepfaas-digits-artifact\n"
#: bump when the artifact layout or the preprocessing (decode.canonical_rows) changes
FORMAT_VERSION: Final = 2
#: format 1 held a pickle: never loaded again (unpickling runs code named in the payload)
PICKLE_FORMAT: Final = 1
#: the types beyond skops's own defaults that `build_svc`'s estimator is made of; an artifact
#: naming any other type is refused before anything in it is built
TRUSTED_TYPES: Final = (
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
)
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
    """Artifact bytes: a magic line, a JSON header line, then the estimator in skops format."""
    payload = bytes(skops.io.dumps(estimator))
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


def check(artifact: bytes, trusted: Sequence[str] = TRUSTED_TYPES) -> bytes:
    """The skops payload of a well-formed artifact whose types are all trusted.

    Builds nothing: skops lists the types an artifact names from its schema alone. Raises
    ``ValueError`` (bad magic, format, checksum, not skops, an untrusted type).
    """
    header = read_header(artifact)
    if header.get("format") == PICKLE_FORMAT:
        raise ValueError(
            "digits artifact format 1 is a pickle, which is never loaded (it could run code): "
            "train the model again to get a format 2 (skops) artifact"
        )
    if header.get("format") != FORMAT_VERSION:
        raise ValueError(
            f"digits artifact format {header.get('format')!r} is not supported "
            f"(this plug-in reads format {FORMAT_VERSION})"
        )
    payload = artifact[len(MAGIC) :].partition(b"\n")[2]
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise ValueError("digits artifact is corrupt: checksum mismatch")
    try:
        named = skops.io.get_untrusted_types(data=payload)
    except Exception as exc:  # zipfile, JSON and schema errors alike: not a skops file
        raise ValueError(f"digits artifact does not hold a skops file: {exc}") from exc
    untrusted = sorted(set(named) - set(trusted))
    if untrusted:
        raise ValueError(
            f"digits artifact names types this plug-in does not trust: {', '.join(untrusted)}"
        )
    return payload


def loads(artifact: bytes, trusted: Sequence[str] = TRUSTED_TYPES) -> Estimator:
    """Check an artifact (`check`), then rebuild the estimator with skops's trusted types only.

    Safe for artifacts from anywhere: skops builds only the trusted types and refuses the rest,
    so no code named in the artifact runs. The checksum catches corruption, not tampering.
    """
    header = read_header(artifact)
    payload = check(artifact, trusted)
    if header.get("sklearn") != sklearn.__version__:
        logger.warning(
            "digits artifact was made with scikit-learn %s; running %s",
            header.get("sklearn"),
            sklearn.__version__,
        )
    try:
        estimator = skops.io.loads(payload, trusted=list(trusted))
    except Exception as exc:  # untrusted types, or a payload skops cannot rebuild
        raise ValueError(f"digits artifact cannot be loaded: {exc}") from exc
    if not callable(getattr(estimator, "predict_proba", None)) or not hasattr(
        estimator, "classes_"
    ):
        raise ValueError("digits artifact does not hold a fitted classifier")
    return estimator  # type: ignore[no-any-return]
