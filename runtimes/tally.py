"""Counts of finished activations, kept by the process that publishes their completion events
(a worker, the controller, a gateway ending a sequence) and sent once a second on
``control.metrics``, where the gateways' metrics add them up.

The gateways used to count by reading every completion event: one more message per activation
to every gateway, about a tenth of a call's CPU. A process's counts since its last message go
in the next one; what a process killed with SIGKILL had not sent yet (under a second's worth) is
not counted, as the counts of a killed gateway are lost.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from eventbus.connection import Bus
from eventbus.namespaces import QUALIFIED_NAME_PATTERN
from eventbus.subjects import CONTROL_METRICS
from runtimes.types import ActivationRecord

log = logging.getLogger(__name__)
#: upper bounds (seconds) of the histograms' buckets; one more bucket holds the rest (+Inf)
BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
)
#: seconds between two messages of one process (none while it counted nothing)
INTERVAL_S: Final = 1.0
#: the longest observation counted (an infinite one would make the message invalid JSON)
MAX_SECONDS: Final = 1e9
#: names per message at most; a process with more sends several
MAX_FUNCTIONS: Final = 1000

Count = Annotated[int, Field(ge=0, le=2**53)]


class Histogram(BaseModel):
    """Observations per bucket (`BUCKETS`, then +Inf) and their sum, in seconds."""

    model_config = ConfigDict(extra="ignore")

    counts: list[Count] = Field(
        default_factory=lambda: [0] * (len(BUCKETS) + 1),
        min_length=len(BUCKETS) + 1,
        max_length=len(BUCKETS) + 1,
    )
    total: float = Field(default=0.0, ge=0, allow_inf_nan=False)

    def observe(self, seconds: float) -> None:
        """Count one observation (negative ones and NaN as 0, past `MAX_SECONDS` as that)."""
        seconds = min(seconds, MAX_SECONDS) if seconds >= 0 else 0.0
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    def add(self, other: Histogram) -> None:
        """Add another's counts to this one's."""
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total

    @property
    def count(self) -> int:
        return sum(self.counts)


class FunctionTally(BaseModel):
    """One function's finished activations: by final status, their run and wait times, and
    the cold starts with the worker's start-up time."""

    model_config = ConfigDict(extra="ignore")

    statuses: dict[Annotated[str, Field(max_length=64)], Count] = Field(
        default_factory=dict, max_length=16
    )
    duration: Histogram = Field(default_factory=Histogram)
    wait: Histogram = Field(default_factory=Histogram)
    cold_starts: Count = 0
    init: Histogram = Field(default_factory=Histogram)

    def add(self, other: FunctionTally) -> None:
        """Add another's counts to this one's."""
        for status, n in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + n
        self.duration.add(other.duration)
        self.wait.add(other.wait)
        self.cold_starts += other.cold_starts
        self.init.add(other.init)


class TallyMessage(BaseModel):
    """What one process sends on ``control.metrics``: counts since its last message (fields
    a later version adds are ignored, so that gateways of this one still count them)."""

    model_config = ConfigDict(extra="ignore")

    functions: dict[
        Annotated[str, Field(min_length=1, max_length=256, pattern=QUALIFIED_NAME_PATTERN)],
        FunctionTally,
    ] = Field(max_length=MAX_FUNCTIONS)

    @model_validator(mode="after")
    def _not_empty(self) -> TallyMessage:
        if not self.functions:
            raise ValueError("a tally names at least one function")
        return self


def read_tally(body: bytes) -> TallyMessage | None:
    """A message of ``control.metrics``, or None (logged) when it is not one."""
    try:
        return TallyMessage.model_validate_json(body)
    except ValidationError as exc:
        log.warning("dropping a malformed activation tally: %s", exc.errors()[:1])
        return None


class CompletionTally:
    """Counts of the activations whose completion this process published, since last taken."""

    def __init__(self) -> None:
        self._functions: dict[str, FunctionTally] = {}

    def __bool__(self) -> bool:
        return bool(self._functions)

    def add(self, record: ActivationRecord) -> None:
        """Count one finished activation."""
        counts = self._functions.get(record.function)
        if counts is None:
            counts = self._functions[record.function] = FunctionTally()
        status = record.status.value
        counts.statuses[status] = counts.statuses.get(status, 0) + 1
        if record.duration_ms is not None:
            counts.duration.observe(record.duration_ms / 1000)
        if record.wait_ms is not None:
            counts.wait.observe(record.wait_ms / 1000)
        if record.cold_start:
            counts.cold_starts += 1
            if record.init_ms is not None:
                counts.init.observe(record.init_ms / 1000)

    def take_counts(self) -> dict[str, FunctionTally]:
        """Every count so far, by function, which are then forgotten."""
        functions, self._functions = self._functions, {}
        return functions

    def take(self) -> list[bytes]:
        """The messages that carry every count so far (none when there is nothing), which
        are then forgotten."""
        functions = self.take_counts()
        names = list(functions)
        return [
            TallyMessage(functions={n: functions[n] for n in names[i : i + MAX_FUNCTIONS]})
            .model_dump_json()
            .encode()
            for i in range(0, len(names), MAX_FUNCTIONS)
        ]


class TallySender:
    """Sends a process's `CompletionTally` on ``control.metrics`` every `INTERVAL_S` while it
    has counts, and once more when stopped."""

    def __init__(self, bus: Bus, tally: CompletionTally, *, interval: float = INTERVAL_S) -> None:
        self.bus = bus
        self.tally = tally
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin sending."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="tally")

    async def stop(self) -> None:
        """Stop, sending what was counted since the last message."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.send()

    async def send(self) -> None:
        """Send the counts now (a core message: none is kept while no gateway listens)."""
        for body in self.tally.take():
            try:
                await self.bus.nc.publish(CONTROL_METRICS, body)
            except Exception as exc:  # the connection is closing: these counts are lost
                log.debug("activation tally not sent: %s", exc)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self.tally:
                await self.send()
