"""S3 event records as MinIO sends them (inside ``Records[]``), built and parsed.

MinIO's NATS target publishes one JSON message per event, no headers:
``{"EventName": "s3:ObjectCreated:Put", "Key": "<bucket>/<key>", "Records": [<record>]}``.
In the record the object key is URL query-escaped (Go's ``url.QueryEscape``: space becomes
``+``, ``/`` becomes ``%2F``) while the message's ``Key`` holds the key as it is. Empty fields
are left out as MinIO's ``omitempty`` does: a delete has no size or ETag, an empty object no
size. AWS S3 notifications (``{"Records": [...]}`` alone) parse the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import quote_plus, unquote_plus

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from eventbus.storage.errors import InvalidNotificationError
from eventbus.storage.types import ObjectInfo

EVENT_VERSION: Final = "2.0"
S3_SCHEMA_VERSION: Final = "1.0"
OBJECT_CREATED_PUT: Final = "s3:ObjectCreated:Put"
OBJECT_CREATED_MULTIPART: Final = "s3:ObjectCreated:CompleteMultipartUpload"
OBJECT_REMOVED_DELETE: Final = "s3:ObjectRemoved:Delete"
_META_PREFIX: Final = "x-amz-meta-"
_BAD_ESCAPE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class RecordContext:
    """Who and where an event came from, for the record's identity and request fields."""

    event_source: str = "deepfaas:s3"
    region: str = ""
    principal_id: str = ""
    source_ip: str = ""
    host: str = ""
    port: str = ""
    user_agent: str = ""
    configuration_id: str = "Config"
    #: the store's endpoint, shown as ``x-minio-origin-endpoint`` when set
    origin_endpoint: str = ""


def escape_key(key: str) -> str:
    """Escape a key the way MinIO puts it in records (Go ``url.QueryEscape``)."""
    return quote_plus(key, safe="")


def unescape_key(escaped: str) -> str:
    """Undo ``escape_key`` strictly: a bad ``%`` escape or invalid UTF-8 raises ValueError."""
    if _BAD_ESCAPE.search(escaped):
        raise ValueError(f"bad percent escape in {escaped!r}")
    return unquote_plus(escaped, errors="strict")


def event_time(moment: datetime) -> str:
    """An event time in MinIO's format, milliseconds and ``Z``."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _record(
    event_name: str,
    bucket: str,
    obj: dict[str, Any],
    context: RecordContext,
    moment: datetime,
    request_id: str | None,
) -> dict[str, Any]:
    sequencer = f"{(moment - _EPOCH) // timedelta(microseconds=1) * 1000:X}"
    obj["sequencer"] = sequencer
    response = {"x-amz-request-id": request_id or sequencer}
    if context.origin_endpoint:
        response["x-minio-origin-endpoint"] = context.origin_endpoint
    return {
        "eventVersion": EVENT_VERSION,
        "eventSource": context.event_source,
        "awsRegion": context.region,
        "eventTime": event_time(moment),
        "eventName": event_name,
        "userIdentity": {"principalId": context.principal_id},
        "requestParameters": {
            "principalId": context.principal_id,
            "region": context.region,
            "sourceIPAddress": context.source_ip,
        },
        "responseElements": response,
        "s3": {
            "s3SchemaVersion": S3_SCHEMA_VERSION,
            "configurationId": context.configuration_id,
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": context.principal_id},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": obj,
        },
        "source": {"host": context.host, "port": context.port, "userAgent": context.user_agent},
    }


def created_event_name(info: ObjectInfo) -> str:
    """``CompleteMultipartUpload`` for a multipart ETag, else ``Put``."""
    return OBJECT_CREATED_MULTIPART if info.is_multipart else OBJECT_CREATED_PUT


def object_created_record(
    info: ObjectInfo,
    *,
    event_name: str | None = None,
    context: RecordContext | None = None,
    time: datetime | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The record of a completed write (the event name follows the ETag unless given)."""
    obj: dict[str, Any] = {"key": escape_key(info.key)}
    if info.size:
        obj["size"] = info.size
    if info.etag:
        obj["eTag"] = info.etag
    if info.content_type:
        obj["contentType"] = info.content_type
    user_metadata = {"content-type": info.content_type} if info.content_type else {}
    for name, value in info.metadata.items():
        user_metadata[_canonical_header(_META_PREFIX + name)] = value
    if user_metadata:
        obj["userMetadata"] = user_metadata
    if info.version_id:
        obj["versionId"] = info.version_id
    name = event_name or created_event_name(info)
    moment = time or datetime.now(UTC)
    return _record(name, info.bucket, obj, context or RecordContext(), moment, request_id)


def object_removed_record(
    bucket: str,
    key: str,
    *,
    version_id: str | None = None,
    context: RecordContext | None = None,
    time: datetime | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The record of a delete: key (and version) only, no size or ETag."""
    obj: dict[str, Any] = {"key": escape_key(key)}
    if version_id:
        obj["versionId"] = version_id
    moment = time or datetime.now(UTC)
    context = context or RecordContext()
    return _record(OBJECT_REMOVED_DELETE, bucket, obj, context, moment, request_id)


def minio_notification(record: Mapping[str, Any]) -> bytes:
    """The message MinIO's NATS target publishes for one record."""
    bucket = record["s3"]["bucket"]["name"]
    key = unescape_key(record["s3"]["object"]["key"])
    message = {"EventName": record["eventName"], "Key": f"{bucket}/{key}", "Records": [record]}
    return orjson.dumps(message)


def _canonical_header(name: str) -> str:
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


class S3Record(BaseModel):
    """One parsed event record: the key unescaped, metadata names lower-case, unprefixed."""

    model_config = ConfigDict(frozen=True)

    event_name: str
    event_source: str
    time: datetime
    bucket: str
    key: str
    size: int | None = None
    etag: str | None = None
    content_type: str | None = None
    user_metadata: dict[str, str] = Field(default_factory=dict)
    version_id: str | None = None
    sequencer: str | None = None
    #: the record exactly as received
    raw: dict[str, Any]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class _WireBucket(_Wire):
    name: str = Field(min_length=1)


class _WireObject(_Wire):
    key: str = Field(min_length=1)
    size: int | None = Field(default=None, ge=0)
    eTag: str | None = None
    contentType: str | None = None
    userMetadata: dict[str, str] | None = None
    versionId: str | None = None
    sequencer: str | None = None


class _WireS3(_Wire):
    bucket: _WireBucket
    object: _WireObject


class _WireRecord(_Wire):
    eventName: str = Field(min_length=1)
    eventSource: str = ""
    eventTime: datetime = Field(strict=False)
    s3: _WireS3


class _WireMessage(_Wire):
    EventName: str | None = None
    Key: str | None = None
    Records: list[dict[str, Any]] = Field(min_length=1)


def parse_minio_notification(body: bytes) -> list[S3Record]:
    """Parse a MinIO NATS message (or AWS ``{"Records": [...]}``); InvalidNotificationError."""
    try:
        message = _WireMessage.model_validate(orjson.loads(body))
    except orjson.JSONDecodeError as exc:
        raise _invalid(f"not JSON: {exc}") from exc
    except ValidationError as exc:
        raise _invalid("not a storage notification", exc) from exc
    records = []
    for index, raw in enumerate(message.Records):
        try:
            wire = _WireRecord.model_validate(raw)
        except ValidationError as exc:
            raise _invalid(f"record {index} is malformed", exc) from exc
        try:
            key = unescape_key(wire.s3.object.key)
        except ValueError as exc:  # UnicodeDecodeError is a ValueError
            raise _invalid(f"record {index} has a badly escaped key: {exc}") from exc
        records.append(_to_record(wire, key, raw))
    if message.Key is not None and message.Key != f"{records[0].bucket}/{records[0].key}":
        raise _invalid(f"Key {message.Key!r} does not match the record's bucket and key")
    if message.EventName is not None and message.EventName != records[0].event_name:
        raise _invalid(f"EventName {message.EventName!r} does not match the record's")
    return records


def _to_record(wire: _WireRecord, key: str, raw: dict[str, Any]) -> S3Record:
    obj = wire.s3.object
    size = obj.size
    if size is None and "ObjectCreated" in wire.eventName:
        size = 0  # MinIO leaves out a zero size (omitempty)
    metadata = {
        name.lower()[len(_META_PREFIX) :]: value
        for name, value in (obj.userMetadata or {}).items()
        if name.lower().startswith(_META_PREFIX)
    }
    moment = wire.eventTime
    return S3Record(
        event_name=wire.eventName,
        event_source=wire.eventSource,
        time=moment if moment.tzinfo else moment.replace(tzinfo=UTC),
        bucket=wire.s3.bucket.name,
        key=key,
        size=size,
        etag=obj.eTag.strip('"') if obj.eTag else None,
        content_type=obj.contentType or None,
        user_metadata=metadata,
        version_id=obj.versionId or None,
        sequencer=obj.sequencer or None,
        raw=raw,
    )


def _invalid(reason: str, exc: ValidationError | None = None) -> InvalidNotificationError:
    errors = (
        []
        if exc is None
        else [{"loc": list(error["loc"]), "msg": error["msg"]} for error in exc.errors()]
    )
    return InvalidNotificationError(
        f"invalid storage notification: {reason}", reason=reason, errors=errors
    )
