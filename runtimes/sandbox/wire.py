"""Values that cross the runner's pipe: storage records and events, as plain JSON."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from eventbus.storage import errors as storage_errors
from eventbus.storage.types import BucketInfo, ListResult, ObjectInfo, ObjectSummary
from eventbus.types import CloudEvent


def dump_info(info: ObjectInfo) -> dict[str, Any]:
    """An ObjectInfo as JSON."""
    value = asdict(info)
    value["last_modified"] = info.last_modified.isoformat()
    value["metadata"] = dict(info.metadata)
    return value


def load_info(value: dict[str, Any]) -> ObjectInfo:
    """An ObjectInfo from JSON."""
    return ObjectInfo(**{**value, "last_modified": datetime.fromisoformat(value["last_modified"])})


def dump_listing(result: ListResult) -> dict[str, Any]:
    """A ListResult as JSON."""
    return {
        "objects": [
            {**asdict(o), "last_modified": o.last_modified.isoformat()} for o in result.objects
        ],
        "prefixes": list(result.prefixes),
        "is_truncated": result.is_truncated,
        "next_marker": result.next_marker,
    }


def load_listing(value: dict[str, Any]) -> ListResult:
    """A ListResult from JSON."""
    return ListResult(
        objects=tuple(
            ObjectSummary(**{**o, "last_modified": datetime.fromisoformat(o["last_modified"])})
            for o in value["objects"]
        ),
        prefixes=tuple(value["prefixes"]),
        is_truncated=bool(value["is_truncated"]),
        next_marker=value["next_marker"],
    )


def dump_bucket(info: BucketInfo) -> dict[str, Any]:
    """A BucketInfo as JSON."""
    return {"name": info.name, "created": info.created.isoformat() if info.created else None}


def load_bucket(value: dict[str, Any]) -> BucketInfo:
    """A BucketInfo from JSON."""
    created = value.get("created")
    return BucketInfo(
        name=value["name"], created=datetime.fromisoformat(created) if created else None
    )


def dump_event(event: CloudEvent | None) -> dict[str, Any] | None:
    """The event's attributes without its data (the data travels as the frame's payload)."""
    if event is None:
        return None
    return event.model_dump(mode="json", exclude={"data"})


def load_event(value: dict[str, Any] | None, data: bytes) -> CloudEvent | None:
    """The event again, its data from the payload."""
    if value is None:
        return None
    return CloudEvent.model_validate({**value, "data": data or None})


def storage_error(kind: str, message: str) -> Exception:
    """The storage error a worker named, as the same class the backends raise."""
    cls = getattr(storage_errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, storage_errors.StorageError):
        return cls(message)
    return storage_errors.StorageError(message)
