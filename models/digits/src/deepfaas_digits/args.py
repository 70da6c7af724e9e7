"""Typed arguments of `predict` and `train` (their JSON Schemas document the model's API)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Label = Annotated[int, Field(ge=0, le=9)]

# bytes travel as base64 in JSON bodies, and as raw bytes when the platform passes objects
_CONFIG = ConfigDict(extra="forbid", val_json_bytes="base64", ser_json_bytes="base64")


class PredictArgs(BaseModel):
    """One uploaded file holding one digit (an image) or several (array or CSV rows)."""

    model_config = _CONFIG

    data: bytes = Field(
        min_length=1,
        description="a PNG (or other image) of one digit, a .npy array of shape (64,), (8, 8), "
        "(n, 64) or (n, 8, 8), or CSV rows of 64 values on the 0..16 scale",
    )
    format: Literal["auto", "image", "npy", "csv"] = Field(
        default="auto", description="how to read `data`; auto looks at magic bytes, then suffix"
    )
    filename: str | None = Field(
        default=None, max_length=1024, description="name of the upload; its suffix helps `auto`"
    )


class TrainArgs(BaseModel):
    """Labelled data (a CSV with a label column, or images by label) and how to fit on it."""

    model_config = _CONFIG

    data: bytes | None = Field(
        default=None, description="CSV with a header: a label column and 64 feature columns"
    )
    images: dict[Label, list[bytes]] | None = Field(
        default=None, description="images by label, as uploaded under `<label>/` key prefixes"
    )
    label_column: str = Field(default="label", min_length=1, max_length=200)
    holdout: float = Field(default=0.25, ge=0.1, le=0.5, description="fraction held out")
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="seed of the holdout split")
    c: float = Field(default=10.0, gt=0, le=1e4, description="the SVM's regularisation C")

    @model_validator(mode="after")
    def _one_source(self) -> TrainArgs:
        if (self.data is None) == (self.images is None):
            raise ValueError("give exactly one of `data` (CSV) and `images` (by label)")
        return self
