"""Typed input and output of the inference function (the contract lives in `runtimes.catalog`)."""

from __future__ import annotations

from runtimes.catalog.requests import INLINE_LIMIT, InferenceInput, InferenceOutput

__all__ = ["INLINE_LIMIT", "InferenceInput", "InferenceOutput"]
