"""Typed input of the thumbnail function."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from runtimes.types import StoredObject


class ThumbnailInput(BaseModel):
    """An uploaded image and the size of its thumbnail."""

    object: StoredObject
    size: int = Field(default=128, ge=8, le=2048, description="longest side, pixels")
    max_bytes: int = Field(default=50 * 1024 * 1024, ge=1, description="largest image read")
    event: dict[str, Any] | None = None
