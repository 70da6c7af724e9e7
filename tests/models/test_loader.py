"""The model plug-in contract and loader (runtimes/catalog/plugins.py), against real entry
points."""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from eventbus.errors import ConflictError
from runtimes.catalog.plugins import (
    ENTRY_POINT_GROUP,
    LoadedModelPlugin,
    ModelPlugin,
    check_model_plugin,
    discover_models,
    load_model_plugin,
    validate_args,
)
from runtimes.errors import ModelError, ModelInputError, ModelNotFoundError

TOY_MODULE = "deepfaas_toy_models"

# A third-party plug-in distribution, as pip would install it: a module and a dist-info.
TOY_SOURCE = """
from dataclasses import dataclass, field
from pydantic import BaseModel


class Args(BaseModel):
    x: int = 1
    behaviour: str = "ok"


@dataclass(frozen=True)
class Out:
    artifact: bytes
    metrics: dict
    data: dict = field(default_factory=dict)


class LocatedError(ValueError):
    def __init__(self, message, loc):
        super().__init__(message)
        self.loc = loc


class Toy:
    predict_args = Args
    train_args = Args

    def __init__(self, name="toy", metadata=None):
        self.name = name
        self.metadata = metadata

    def get_metadata(self):
        return self.metadata if self.metadata is not None else {
            "name": self.name, "description": "a toy", "framework": "none", "metric": "score"
        }

    def load(self, artifact):
        if artifact != b"toy-artifact":
            raise ValueError("not a toy artifact")
        return {"offset": 10}

    def predict(self, model, **args):
        how = args["behaviour"]
        if how == "value":
            raise LocatedError("x is odd", ("x",))
        if how == "plain-value":
            raise ValueError("no")
        if how == "crash":
            raise RuntimeError("disk on fire")
        if how == "list":
            return [1]
        if how == "ours":
            from eventbus.errors import ConflictError
            raise ConflictError("taken", key="k")
        return {"y": args["x"] + model["offset"]}

    def train(self, **args):
        metrics = {
            "ok": {"score": 0.5, "n": 3},
            "no-metric": {"loss": 0.1},
            "nan": {"score": float("nan")},
            "text": {"score": "high"},
        }[args["behaviour"]]
        artifact = b"" if args["x"] == 0 else b"toy-artifact"
        return Out(artifact, metrics, {"rows": args["x"]})

    def train_default(self):
        return Out(b"toy-artifact", {"score": 0.25})


incomplete = Toy()
incomplete.train = None
"""

ENTRY_POINTS = f"""
[{ENTRY_POINT_GROUP}]
toy = {TOY_MODULE}:Toy
toy-incomplete = {TOY_MODULE}:incomplete
toy-broken = deepfaas_no_such_module:plugin
Bad_Name = {TOY_MODULE}:Toy
"""


@pytest.fixture
def toy_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Install the toy distribution by putting it on sys.path for one test."""
    (tmp_path / f"{TOY_MODULE}.py").write_text(textwrap.dedent(TOY_SOURCE))
    info = tmp_path / "deepfaas_toy_models-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: deepfaas-toy-models\nVersion: 1.2.3\n"
    )
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop(TOY_MODULE, None)


@pytest.fixture
def toy(toy_dist: Path) -> LoadedModelPlugin:
    return load_model_plugin("toy")


def test_digits_is_discovered_through_its_entry_point() -> None:
    found = discover_models()
    assert found["digits"].value == "deepfaas_digits.plugin:plugin"
    assert found["digits"].group == ENTRY_POINT_GROUP


def test_loading_digits_checks_and_describes_it(digits_plugin: LoadedModelPlugin) -> None:
    meta = digits_plugin.metadata
    assert (meta.name, meta.framework, meta.metric) == ("digits", "scikit-learn", "accuracy")
    assert digits_plugin.version == version("deepfaas-digits")
    assert digits_plugin.get_metadata()["keywords"]
    assert "data" in digits_plugin.predict_schema()["properties"]
    assert {"data", "images", "holdout"} <= set(digits_plugin.train_schema()["properties"])
    assert repr(digits_plugin) == f"LoadedModelPlugin('digits', version={meta.version!r})"


def test_an_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(
        ModelNotFoundError, match=r"no model plug-in named 'nope' \(known: .*digits"
    ):
        load_model_plugin("nope")


def test_a_class_entry_point_is_instantiated(toy: LoadedModelPlugin) -> None:
    assert toy.version == "1.2.3"  # from the distribution, not the plug-in
    assert toy.metadata.metric == "score"
    model = toy.load(b"toy-artifact")
    assert toy.predict(model, x=2) == {"y": 12}


def test_badly_named_entry_points_are_skipped(
    toy_dist: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="runtimes.catalog.plugins"):
        found = discover_models()
    assert {"toy", "toy-incomplete", "toy-broken", "digits"} <= set(found)
    assert "Bad_Name" not in found
    assert "skipping model entry point 'Bad_Name'" in caplog.text


def test_an_incomplete_plugin_is_refused(toy_dist: Path) -> None:
    with pytest.raises(ModelError, match="does not keep the contract: no callable 'train'"):
        load_model_plugin("toy-incomplete")


def test_a_plugin_that_does_not_import_is_refused(toy_dist: Path) -> None:
    with pytest.raises(ModelError, match="cannot load model plug-in 'toy-broken'") as caught:
        load_model_plugin("toy-broken")
    assert caught.value.fields["entry_point"] == "deepfaas_no_such_module:plugin"


def test_metadata_is_checked(toy_dist: Path) -> None:
    toy_cls = sys.modules[TOY_MODULE].Toy if TOY_MODULE in sys.modules else None
    toy_cls = toy_cls or __import__(TOY_MODULE).Toy
    assert isinstance(check_model_plugin(toy_cls(), "toy"), LoadedModelPlugin)
    with pytest.raises(ModelError, match="calls itself 'other' but is registered as 'toy'"):
        check_model_plugin(toy_cls(name="other"), "toy")
    with pytest.raises(ModelError, match="invalid metadata"):
        check_model_plugin(toy_cls(metadata={"metric": ""}), "toy")
    with pytest.raises(ModelError, match="'predict_args' is not a pydantic model class"):
        broken = toy_cls()
        broken.predict_args = dict
        check_model_plugin(broken, "toy")


def test_plugin_value_errors_become_input_errors(toy: LoadedModelPlugin) -> None:
    model = toy.load(b"toy-artifact")
    with pytest.raises(ModelInputError, match="model 'toy' predict: x is odd") as caught:
        toy.predict(model, behaviour="value")
    assert caught.value.fields["errors"] == [
        {"loc": ["x"], "msg": "x is odd", "type": "value_error"}
    ]
    with pytest.raises(ModelInputError) as caught:
        toy.predict(model, behaviour="plain-value")
    assert caught.value.fields["errors"][0]["loc"] == []


def test_other_plugin_failures_become_model_errors(toy: LoadedModelPlugin) -> None:
    model = toy.load(b"toy-artifact")
    with pytest.raises(ModelError, match="failed in predict: RuntimeError: disk on fire") as caught:
        toy.predict(model, behaviour="crash")
    assert not isinstance(caught.value, ModelInputError)
    assert caught.value.fields == {"model": "toy", "stage": "predict"}
    with pytest.raises(ModelError, match="returned list, not a mapping"):
        toy.predict(model, behaviour="list")
    with pytest.raises(ConflictError, match="taken"):  # the platform's own errors pass through
        toy.predict(model, behaviour="ours")
    with pytest.raises(ModelError, match="not a toy artifact") as caught:
        toy.load(b"other")
    assert not isinstance(caught.value, ModelInputError)


def test_arguments_are_validated_before_the_plugin_runs(toy: LoadedModelPlugin) -> None:
    with pytest.raises(
        ModelInputError, match="invalid predict arguments for model 'toy'"
    ) as caught:
        toy.predict({"offset": 0}, x="many")
    assert [e["loc"] for e in caught.value.fields["errors"]] == [["x"]]
    assert all("input" not in e for e in caught.value.fields["errors"])


def test_train_results_are_checked(toy: LoadedModelPlugin) -> None:
    result = toy.train(x=4)
    assert (result.model, result.plugin_version, result.artifact) == (
        "toy",
        "1.2.3",
        b"toy-artifact",
    )
    assert result.metrics == {"score": 0.5, "n": 3.0}
    assert result.score == 0.5
    assert result.data == {"rows": 4}
    assert toy.train_default().score == 0.25
    cases: list[tuple[dict[str, Any], str]] = [
        ({"behaviour": "no-metric"}, "lack the gating metric 'score'"),
        ({"behaviour": "nan"}, "not a mapping of names to finite numbers"),
        ({"behaviour": "text"}, "not a mapping of names to finite numbers"),
        ({"x": 0}, "no artifact bytes"),
    ]
    for args, problem in cases:
        with pytest.raises(ModelError, match=problem):
            toy.train(**args)


def test_validate_args_takes_mappings_and_models() -> None:
    class Args(BaseModel):
        n: int

    assert validate_args(Args, {"n": "3"}, model="m", what="predict").n == 3
    given = Args(n=1)
    assert validate_args(Args, given, model="m", what="predict") is given
    with pytest.raises(ModelInputError, match=r"invalid train arguments for model 'm': n: "):
        validate_args(Args, {}, model="m", what="train")


def test_loaded_plugins_keep_the_protocol(digits_plugin: LoadedModelPlugin) -> None:
    def takes(plugin: ModelPlugin) -> Any:
        return plugin.get_metadata()

    assert takes(digits_plugin)["name"] == "digits"
    assert takes(digits_plugin.plugin)["name"] == "digits"
