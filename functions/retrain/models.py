"""Typed input and output of the retrain function."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from runtimes.catalog.plugins import MODEL_NAME_PATTERN
from runtimes.types import StoredObject

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
