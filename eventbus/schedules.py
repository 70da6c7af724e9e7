"""Schedules: when a trigger fires by itself (a cron expression in a time zone, or an interval).

Cron expressions are parsed by `croniter`: 5 fields, or 6 with the seconds first (as
OpenWhisk's alarms and Quartz write them). An interval of ``interval_s`` seconds ticks at
``start + k * interval`` (from the Unix epoch without a start), so every dispatcher computes
the same ticks. Ticks are aware UTC datetimes; a tick's event id is derived from the schedule's
owner and the tick's time (`tick_id`), which is what makes one invocation per tick possible.

The clock is a setting (`create_clock`): the system clock in production, or a file holding the
current time, which tests advance instead of sleeping.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: the event type suffix of a tick (``<prefix>.schedule.tick``)
TICK_TYPE_SUFFIX: Final = "schedule.tick"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_TINY: Final = timedelta(microseconds=1)
MAX_INTERVAL_S: Final = 366 * 86_400


def _cron(expression: str, start: datetime) -> croniter:
    return croniter(
        expression, start, second_at_beginning=len(expression.split()) == 6, ret_type=datetime
    )


class Schedule(BaseModel):
    """When a trigger fires: ``cron`` (with ``timezone``) or ``interval_s``, within optional
    ``start``/``stop`` dates; ``catch_up`` says what a tick missed while the platform was down
    does (``once``: one run at start; ``skip``: nothing); ``payload`` is each tick's data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cron: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="cron expression: 5 fields, or 6 with the seconds first",
        examples=["0 3 * * *"],
    )
    timezone: str = Field(default="UTC", max_length=64, description="IANA time zone of `cron`")
    interval_s: int | None = Field(
        default=None, ge=1, le=MAX_INTERVAL_S, description="fire every N seconds instead"
    )
    catch_up: Literal["once", "skip"] = Field(
        default="once", description="a tick missed while the platform was down: run once, or skip"
    )
    start: datetime | None = Field(default=None, description="no tick before (RFC 3339)")
    stop: datetime | None = Field(default=None, description="no tick after (RFC 3339)")
    payload: dict[str, Any] = Field(
        default_factory=dict, description="each tick's data: its fields are handed to the function"
    )

    @field_validator("cron")
    @classmethod
    def _parse_cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = " ".join(value.split())
        if len(value.split()) not in (5, 6):
            raise ValueError(f"cron {value!r}: use 5 fields, or 6 with the seconds first")
        try:
            _cron(value, _EPOCH).get_next()
        except (CroniterError, ValueError, KeyError) as exc:
            raise ValueError(f"invalid cron expression {value!r}: {exc}") from exc
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from exc
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Schedule:
        if (self.cron is None) == (self.interval_s is None):
            raise ValueError("a schedule has exactly one of `cron` and `interval_s`")
        if self.start is not None and self.stop is not None and self.stop <= self.start:
            raise ValueError("`stop` must come after `start`")
        return self

    @property
    def zone(self) -> ZoneInfo:
        """The time zone of the cron expression."""
        return ZoneInfo(self.timezone)

    def _aware(self, value: datetime) -> datetime:
        """A date without an offset is in the schedule's time zone."""
        return value.replace(tzinfo=self.zone) if value.tzinfo is None else value

    @property
    def start_at(self) -> datetime | None:
        """``start`` as an aware time."""
        return None if self.start is None else self._aware(self.start)

    @property
    def stop_at(self) -> datetime | None:
        """``stop`` as an aware time."""
        return None if self.stop is None else self._aware(self.stop)

    def next_after(self, moment: datetime) -> datetime | None:
        """The first tick strictly after ``moment`` (None past ``stop``)."""
        start = self.start_at
        if start is not None and moment < start:
            moment = start - _TINY
        if self.interval_s is not None:
            anchor = start or _EPOCH
            step = timedelta(seconds=self.interval_s)
            tick = anchor + ((moment - anchor) // step + 1) * step
        else:
            assert self.cron is not None
            found: datetime = _cron(self.cron, moment.astimezone(self.zone)).get_next()
            tick = found
        tick = tick.astimezone(UTC)
        stop = self.stop_at
        return None if stop is not None and tick > stop else tick

    def last_at_or_before(self, moment: datetime) -> datetime | None:
        """The latest tick at or before ``moment`` (None before ``start``)."""
        stop = self.stop_at
        if stop is not None and moment > stop:
            moment = stop
        if self.interval_s is not None:
            anchor = self.start_at or _EPOCH
            if moment < anchor:
                return None
            step = timedelta(seconds=self.interval_s)
            tick = anchor + ((moment - anchor) // step) * step
        else:
            assert self.cron is not None
            found: datetime = _cron(self.cron, moment.astimezone(self.zone) + _TINY).get_prev()
            tick = found
        start = self.start_at
        if start is not None and tick < start:
            return None
        return tick.astimezone(UTC)

    def ticks(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """Every tick in ``(after, until]``, oldest first."""
        tick = self.next_after(after)
        while tick is not None and tick <= until:
            yield tick
            tick = self.next_after(tick)

    def upcoming(self, now: datetime, count: int = 5) -> list[datetime]:
        """The next ``count`` ticks after ``now`` (fewer when ``stop`` comes first)."""
        found: list[datetime] = []
        tick = self.next_after(now)
        while tick is not None and len(found) < count:
            found.append(tick)
            tick = self.next_after(tick)
        return found


def tick_id(owner: str, tick: datetime) -> str:
    """The event id of one tick of one trigger (or event schedule): 32 hex digits."""
    text = f"{owner}\0schedule\0{tick.astimezone(UTC).isoformat()}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class Clock(Protocol):
    """Where the scheduler reads the time."""

    def now(self) -> datetime:
        """The current time, aware."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        """The current UTC time."""
        return datetime.now(UTC)


@dataclass(frozen=True)
class FileClock:
    """A clock that reads the current time from a file (RFC 3339 or Unix seconds): tests
    advance it by writing the file."""

    path: Path

    def now(self) -> datetime:
        """The time the file holds; `ValueError` when it holds none."""
        text = self.path.read_text().strip()
        try:
            return datetime.fromtimestamp(float(text), UTC)
        except ValueError:
            moment = datetime.fromisoformat(text)
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def create_clock(spec: str) -> Clock:
    """The clock a setting names: empty or ``system``, or ``file:<path>``."""
    if spec in ("", "system"):
        return SystemClock()
    if spec.startswith("file:") and len(spec) > len("file:"):
        return FileClock(Path(spec[len("file:") :]))
    raise ValueError(f"unknown clock {spec!r}: use `system` or `file:<path>`")
