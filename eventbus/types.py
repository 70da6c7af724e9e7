"""Contracts of the event bus: the CloudEvent model, subjects and stream names."""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime
from typing import Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

# re-exported: the subjects' one home is `eventbus.subjects`
from eventbus.subjects import event_subject as event_subject
from eventbus.subjects import invoke_subject as invoke_subject
from eventbus.subjects import run_subject as run_subject

#: attributes defined by the CloudEvents 1.0 core specification
CORE_ATTRIBUTES: Final = frozenset(
    {"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "dataschema"}
)
REQUIRED_ATTRIBUTES: Final = ("specversion", "id", "source", "type")
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")

ExtensionValue = str | int | bool


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 event; ``data`` holds the payload bytes exactly as carried."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    type: str = Field(min_length=1)
    subject: str | None = None
    time: datetime | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None
    data: bytes | None = None
    extensions: dict[str, ExtensionValue] = Field(default_factory=dict)

    @field_validator("extensions")
    @classmethod
    def _check_extension_names(cls, value: dict[str, ExtensionValue]) -> dict[str, ExtensionValue]:
        for name in value:
            if not _EXTENSION_NAME.fullmatch(name) or name in CORE_ATTRIBUTES or name == "data":
                raise ValueError(
                    f"extension attribute name {name!r} must be 1-20 lower-case letters or "
                    "digits and not a core attribute"
                )
        return value

    @classmethod
    def create(
        cls,
        *,
        type: str,
        source: str,
        data: Any = None,
        id: str | None = None,
        subject: str | None = None,
        extensions: dict[str, ExtensionValue] | None = None,
        time: datetime | None = None,
    ) -> CloudEvent:
        """Build an event with a JSON payload, a fresh id and the current time."""
        return cls(
            id=id or new_id(),
            source=source,
            type=type,
            subject=subject,
            time=time or datetime.now(UTC),
            datacontenttype="application/json" if data is not None else None,
            data=orjson.dumps(data) if data is not None else None,
            extensions=extensions or {},
        )

    def json_data(self) -> Any:
        """The payload decoded as JSON (``None`` when there is none)."""
        if self.data is None or self.data == b"":
            return None
        return orjson.loads(self.data)

    def attributes(self) -> dict[str, ExtensionValue]:
        """Every context attribute (core and extension) that has a value, as strings or scalars."""
        attrs: dict[str, ExtensionValue] = {
            "specversion": self.specversion,
            "id": self.id,
            "source": self.source,
            "type": self.type,
        }
        if self.subject is not None:
            attrs["subject"] = self.subject
        if self.time is not None:
            attrs["time"] = format_time(self.time)
        if self.datacontenttype is not None:
            attrs["datacontenttype"] = self.datacontenttype
        if self.dataschema is not None:
            attrs["dataschema"] = self.dataschema
        attrs.update(self.extensions)
        return attrs


def format_time(value: datetime) -> str:
    """RFC 3339 with a ``Z`` for UTC, as CloudEvents producers conventionally write it."""
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def new_id() -> str:
    """A 32-hex-digit id that sorts by creation time (a UUIDv7 layout, as OpenWhisk ids look)."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | (0x7 << 76) | (rand & ((1 << 76) - 1))
    return f"{value:032x}"


# Stream names; the subjects are named in `eventbus.subjects` (re-exported here for callers
# that import them from the contracts).
EVENTS_STREAM: Final = "EVENTS"
INVOCATIONS_STREAM: Final = "INVOCATIONS"
DLQ_STREAM: Final = "DLQ"
