"""Typed input and output of the retrain function (the contract lives in `runtimes.catalog`)."""

from __future__ import annotations

from runtimes.catalog.requests import READY_MARKER, RetrainInput, RetrainOutput

__all__ = ["READY_MARKER", "RetrainInput", "RetrainOutput"]
