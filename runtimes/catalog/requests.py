"""Inputs and outputs of the `inference` and `retrain` functions.

Kept in `runtimes/` because the gateway's DEEPaaS routes (`/v2/models`) build these inputs
and the functions serve them: neither imports the other.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from eventbus.forms import encode_form
from runtimes.catalog.plugins import MODEL_NAME_PATTERN
from runtimes.types import StoredObject

INLINE_LIMIT = 1 << 20  # larger inputs travel by storage reference, never inside a message


class InferenceInput(BaseModel):
    """What to predict on (inline bytes or a stored object) and with which model version."""

    model_config = ConfigDict(extra="ignore", ser_json_bytes="base64", val_json_bytes="base64")

    model: str = Field(pattern=MODEL_NAME_PATTERN, description="catalog module name")
    version: int | None = Field(
        default=None, ge=1, description="pin a version; default: the promoted one"
    )
    object: StoredObject | None = Field(default=None, description="read the input from storage")
    data: bytes | None = Field(
        default=None,
        max_length=INLINE_LIMIT,
        description="the input itself (raw bytes in a form, base64 in JSON)",
    )
    filename: str | None = Field(default=None, max_length=1024)
    args: dict[str, Any] = Field(
        default_factory=dict, description="other arguments of the model's predict"
    )
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=1, description="largest object read")
    event: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> InferenceInput:
        if (self.object is None) == (self.data is None):
            raise ValueError("give exactly one of `object` (stored) and `data` (inline)")
        return self


class InferenceOutput(BaseModel):
    """The model's answer and the version that gave it."""

    model: str
    version: int
    result: dict[str, Any]
    input: StoredObject | None = None


READY_MARKER = "_READY"


class RetrainInput(BaseModel):
    """Which module to train, on what, and whether the promotion gate runs.

    The data is one of: a stored CSV (`object` ending in `.csv`), a stored image set (`object`
    is a `_READY` marker; the images are under `<its folder>/<label>/`), an inline CSV (`data`),
    or the plug-in's own data (`default`). A catalog event's `module` names the module too.
    """

    model_config = ConfigDict(extra="ignore", ser_json_bytes="base64", val_json_bytes="base64")

    model: str | None = Field(default=None, pattern=MODEL_NAME_PATTERN)
    module: str | None = Field(
        default=None, pattern=MODEL_NAME_PATTERN, description="set by catalog events"
    )
    object: StoredObject | None = None
    data: bytes | None = Field(default=None, max_length=1 << 20, description="inline CSV")
    default: bool = Field(default=False, description="train on the plug-in's own data")
    args: dict[str, Any] = Field(default_factory=dict, description="the plug-in's train arguments")
    promote: Literal["gate", "never"] = Field(
        default="gate", description="run the promotion gate, or keep the version a candidate"
    )
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=1, description="most data read")
    event: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> RetrainInput:
        if self.model is None and self.module is None:
            raise ValueError("name the module to train (`model`)")
        sources = sum((self.object is not None, self.data is not None, self.default))
        if sources != 1:
            raise ValueError("give exactly one of `object`, `data` and `default: true`")
        return self

    @property
    def name(self) -> str:
        """The module to train."""
        return self.model or self.module or ""


class RetrainOutput(BaseModel):
    """The new version, what the gate said, and its metrics."""

    model: str
    version: int
    state: str
    promoted: bool
    reason: str
    metrics: dict[str, float]
    seconds: float
    data: dict[str, Any] = Field(default_factory=dict)


def as_form(inp: InferenceInput | RetrainInput) -> tuple[bytes, str]:
    """``(body, content type)``: the input as a form, `data` as its raw bytes (never base64),
    the other fields as JSON parts; the worker hands the handler the fields."""
    fields = inp.model_dump(mode="json", exclude_none=True, exclude={"data"})
    return encode_form({**fields, "data": inp.data})
