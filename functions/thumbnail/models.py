"""Typed input of the thumbnail function."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class StoredObject(BaseModel):
    """The object a storage trigger hands over (the storage event's S3 record, flattened)."""

    bucket: str
    key: str
    size: int | None = None
    etag: str | None = None
    content_type: str | None = None


class ThumbnailInput(BaseModel):
    """An uploaded image and the size of its thumbnail."""

    object: StoredObject
    size: int = Field(default=128, ge=8, le=2048, description="longest side, pixels")
    max_bytes: int = Field(default=50 * 1024 * 1024, ge=1, description="largest image read")
    event: dict[str, Any] | None = None
