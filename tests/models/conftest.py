"""Fixtures of the model plug-in tests: the installed digits plug-in and its default version."""

from __future__ import annotations

from typing import Any

import pytest

from runtimes.catalog.plugins import (
    LoadedModelPlugin,
    TrainResult,
    discover_models,
    load_model_plugin,
)

INSTALL = "pip install --no-deps -e models/digits"


@pytest.fixture(scope="session")
def digits_plugin() -> LoadedModelPlugin:
    """The digits plug-in, found through its real `deepfaas.models` entry point."""
    if "digits" not in discover_models():
        pytest.fail(f"the digits plug-in is not installed in this venv: run `{INSTALL}`")
    return load_model_plugin("digits")


@pytest.fixture(scope="session")
def default_version(digits_plugin: LoadedModelPlugin) -> TrainResult:
    """The first version, trained on the digits shipped with scikit-learn."""
    return digits_plugin.train_default()


@pytest.fixture(scope="session")
def digits_model(digits_plugin: LoadedModelPlugin, default_version: TrainResult) -> Any:
    """The default version, loaded as a worker keeps it."""
    return digits_plugin.load(default_version.artifact)
