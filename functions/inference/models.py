"""Typed input and output of the inference function."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
        default=None, max_length=INLINE_LIMIT, description="the input itself (base64 in JSON)"
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
