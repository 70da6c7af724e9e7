"""A batch in one model call answers as each input alone does; a bad input fails alone."""

from __future__ import annotations

from typing import Any

from runtimes.catalog.plugins import LoadedModelPlugin
from runtimes.errors import ModelInputError
from tests.models.samples import csv_bytes, digits, npy, png


def test_a_batch_answers_as_each_input_alone(
    digits_plugin: LoadedModelPlugin, digits_model: Any
) -> None:
    data = digits()
    inputs: list[dict[str, Any]] = [
        {"data": png(data.x[3]), "filename": "3.png"},
        {"data": npy(data.x[10:14])},
        {"data": csv_bytes(data.x[20:22])},
        {"data": png(data.x[7])},
    ]
    alone = [digits_plugin.predict(digits_model, **args) for args in inputs]
    assert digits_plugin.predict_many(digits_model, inputs) == alone
    assert [p["label"] for p in alone[1]["predictions"]] == list(data.y[10:14])


def test_a_bad_input_fails_alone(digits_plugin: LoadedModelPlugin, digits_model: Any) -> None:
    data = digits()
    good = {"data": png(data.x[5])}
    answers = digits_plugin.predict_many(
        digits_model, [good, {"data": b"\x89PNG\r\n\x1a\nbroken"}, {"bogus": 1}, good]
    )
    assert isinstance(answers[1], ModelInputError) and isinstance(answers[2], ModelInputError)
    expected = digits_plugin.predict(digits_model, **good)
    assert answers[0] == answers[3] == expected
