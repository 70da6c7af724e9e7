"""Bodies of the native API that are not specs or records themselves."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from runtimes.types import FUNCTION_NAME_PATTERN, ActivationStatus, FunctionSpec


class FunctionSpecIn(FunctionSpec):
    """A function spec as sent by a client; the name may come from the path instead."""

    name: str | None = Field(default=None, pattern=FUNCTION_NAME_PATTERN)  # type: ignore[assignment]


class Accepted(BaseModel):
    """An invocation accepted for later: poll its activation, or wait for the callback."""

    activation_id: str
    status: str = "accepted"
    location: str


class ActivationSummary(BaseModel):
    """An activation record without its result and logs, for listings."""

    id: str
    function: str
    namespace: str = "default"
    version: int
    status: ActivationStatus
    mode: str
    start: datetime
    end: datetime | None = None
    duration_ms: float | None = None
    wait_ms: float | None = None
    cold_start: bool = False
    attempts: int = 1
    error: str | None = None
    cause: str | None = None
    output: dict[str, Any] | None = None
    annotations: dict[str, Any] = Field(default_factory=dict)


class ActivationResult(BaseModel):
    """The result of an activation, as OpenWhisk's `/result` shapes it."""

    id: str
    status: ActivationStatus
    success: bool
    result: Any = None
    error: str | None = None


class Instance(BaseModel):
    """One worker of a function."""

    pid: int
    ready: bool
    stopping: bool
    uptime_s: float
    version: int
    inflight: int = 0
    gpus: list[int] = Field(default_factory=list)
    site: str = "local"
