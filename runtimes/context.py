"""What a handler and its executor share: the handler's context and an activation's status.

Kept free of pydantic and of the bus's models (re-exported by `runtimes.types`), so that a
sandboxed runner starts without them: they load only when a handler needs them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from eventbus.types import CloudEvent

MAX_INLINE_RESULT_BYTES: Final = 1 << 20


class ActivationStatus(StrEnum):
    """Where an activation stands; the last four are terminal."""

    RUNNING = "running"
    RETRYING = "retrying"
    SUCCESS = "success"
    ERROR = "error"
    TIMEOUT = "timeout"
    INVALID = "invalid"

    @property
    def terminal(self) -> bool:
        return self not in (ActivationStatus.RUNNING, ActivationStatus.RETRYING)


@dataclass(frozen=True)
class Context:
    """What a handler gets beside its input: who it is, its deadline, a logger, its cause."""

    activation_id: str
    function: str
    version: int
    deadline: float
    logger: logging.Logger
    event: CloudEvent | None = None
    attempt: int = 1
    #: the platform's object store (`eventbus.storage.Storage`), when the worker has one
    storage: Any = None
    #: where a trigger wants the result written: {"bucket": ..., "key": ...}
    output: dict[str, str] | None = None
    #: the worker's bus connection (`eventbus.connection.Bus`): KV, events, calls to other functions
    bus: Any = None
    #: key/values the handler sets; they land in the activation record's ``annotations``
    annotations: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def remaining(self) -> float:
        """Seconds left before the activation times out."""
        return max(0.0, self.deadline - time.time())
