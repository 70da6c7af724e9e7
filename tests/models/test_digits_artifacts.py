"""Digits artifacts are skops with a trusted-types check: nothing in an artifact runs on load."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pytest
import skops.io

from runtimes.catalog.plugins import LoadedModelPlugin, TrainResult
from runtimes.errors import ArtifactRefusedError, ModelInputError
from tests.models.crafted import MAGIC, code_pickle, digits_format_1


class Untrusted:
    """A type no digits artifact holds."""

    def __init__(self) -> None:
        self.x = 1


def _skops_artifact(obj: object) -> bytes:
    payload = skops.io.dumps(obj)
    header = {"format": 2, "sha256": hashlib.sha256(payload).hexdigest(), "classes": []}
    return MAGIC + json.dumps(header).encode() + b"\n" + payload


def test_trained_artifacts_are_skops_of_trusted_types(
    digits_plugin: LoadedModelPlugin, default_version: TrainResult
) -> None:
    payload = default_version.artifact[len(MAGIC) :].partition(b"\n")[2]
    assert payload.startswith(b"PK")  # a zip: skops, not a pickle
    assert set(skops.io.get_untrusted_types(data=payload)) == {
        "sklearn.calibration._CalibratedClassifier",
        "sklearn.calibration._SigmoidCalibration",
    }
    digits_plugin.check_artifact(default_version.artifact)
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(payload)


@pytest.mark.parametrize(
    ("craft", "message"),
    [
        (digits_format_1, "format 1 is a pickle"),
        (code_pickle, "not a digits model artifact"),
        (lambda m: MAGIC + b'{"format": 2, "sha256": "x"}\n' + code_pickle(m), "checksum"),
        (
            lambda m: (
                MAGIC
                + json.dumps(
                    {"format": 2, "sha256": hashlib.sha256(code_pickle(m)).hexdigest()}
                ).encode()
                + b"\n"
                + code_pickle(m)
            ),
            "does not hold a skops file",
        ),
    ],
)
def test_a_pickle_that_runs_code_is_refused_and_never_runs(
    digits_plugin: LoadedModelPlugin, tmp_path: Path, craft: object, message: str
) -> None:
    marker = tmp_path / "ran"
    artifact = craft(marker)  # type: ignore[operator]
    with pytest.raises(ModelInputError, match=message):
        digits_plugin.check_artifact(artifact)
    with pytest.raises(ArtifactRefusedError, match=message):
        digits_plugin.load(artifact)
    assert not marker.exists()
    pickle.loads(code_pickle(marker))  # the craft is real: unpickled, it does run
    assert marker.exists()


def test_a_skops_artifact_naming_an_untrusted_type_is_refused(
    digits_plugin: LoadedModelPlugin,
) -> None:
    artifact = _skops_artifact(Untrusted())
    with pytest.raises(ModelInputError, match=r"does not trust: .*Untrusted"):
        digits_plugin.check_artifact(artifact)
    with pytest.raises(ArtifactRefusedError, match="does not trust"):
        digits_plugin.load(artifact)
