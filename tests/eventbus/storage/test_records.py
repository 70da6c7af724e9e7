"""S3/MinIO event records: building them, and parsing MinIO's NATS messages back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from eventbus.storage import (
    OBJECT_CREATED_MULTIPART,
    OBJECT_CREATED_PUT,
    OBJECT_REMOVED_DELETE,
    InvalidNotificationError,
    ObjectInfo,
    RecordContext,
    escape_key,
    minio_notification,
    object_created_record,
    object_removed_record,
    parse_minio_notification,
    unescape_key,
)

WHEN = datetime(2026, 11, 25, 9, 27, 27, 123456, tzinfo=UTC)


def info(
    key: str = "in/photo 1.jpg", etag: str = "5d41402abc4b2a76b9719d911017c592", size: int = 5
) -> ObjectInfo:
    return ObjectInfo(
        bucket="uploads",
        key=key,
        size=size,
        etag=etag,
        content_type="image/jpeg",
        last_modified=WHEN,
        metadata={"project": "deepfaas"},
    )


@pytest.mark.parametrize(
    ("key", "escaped"),
    [
        ("photos/my summer(2024).jpg", "photos%2Fmy+summer%282024%29.jpg"),
        ("a+b%c", "a%2Bb%25c"),
        ("ünï/日本", "%C3%BCn%C3%AF%2F%E6%97%A5%E6%9C%AC"),
        ("keep-_.~AZaz09", "keep-_.~AZaz09"),
        ("q?x=1&y=*;@:,$", "q%3Fx%3D1%26y%3D%2A%3B%40%3A%2C%24"),
    ],
)
def test_keys_are_escaped_like_go_query_escape(key: str, escaped: str) -> None:
    assert escape_key(key) == escaped
    assert unescape_key(escaped) == key


def test_put_record_has_the_minio_shape() -> None:
    context = RecordContext(event_source="minio:s3", principal_id="AKIA", region="eu-1")
    record = object_created_record(info(), context=context, time=WHEN, request_id="REQ1")
    assert record["eventVersion"] == "2.0"
    assert record["eventSource"] == "minio:s3"
    assert record["awsRegion"] == "eu-1"
    assert record["eventTime"] == "2026-11-25T09:27:27.123Z"
    assert record["eventName"] == OBJECT_CREATED_PUT
    assert record["userIdentity"] == {"principalId": "AKIA"}
    assert record["requestParameters"]["principalId"] == "AKIA"
    assert record["responseElements"] == {"x-amz-request-id": "REQ1"}
    s3 = record["s3"]
    assert (s3["s3SchemaVersion"], s3["configurationId"]) == ("1.0", "Config")
    assert s3["bucket"] == {
        "name": "uploads",
        "ownerIdentity": {"principalId": "AKIA"},
        "arn": "arn:aws:s3:::uploads",
    }
    obj = s3["object"]
    assert obj["key"] == "in%2Fphoto+1.jpg"
    assert (obj["size"], obj["eTag"], obj["contentType"]) == (5, info().etag, "image/jpeg")
    assert obj["userMetadata"] == {"content-type": "image/jpeg", "X-Amz-Meta-Project": "deepfaas"}
    assert obj["sequencer"] == f"{int(WHEN.timestamp()) * 10**9 + 123456000:X}"
    assert "versionId" not in obj
    assert set(record["source"]) == {"host", "port", "userAgent"}


def test_multipart_and_explicit_event_names() -> None:
    multipart = object_created_record(info(etag="0123456789abcdef0123456789abcdef-3"))
    assert multipart["eventName"] == OBJECT_CREATED_MULTIPART
    copied = object_created_record(info(), event_name="s3:ObjectCreated:Copy")
    assert copied["eventName"] == "s3:ObjectCreated:Copy"


def test_empty_object_record_leaves_size_out_like_minio() -> None:
    obj = object_created_record(info(size=0))["s3"]["object"]
    assert "size" not in obj
    [parsed] = parse_minio_notification(minio_notification(object_created_record(info(size=0))))
    assert parsed.size == 0


def test_delete_record_has_no_size_or_etag() -> None:
    record = object_removed_record("uploads", "in/photo 1.jpg", version_id="v9", time=WHEN)
    assert record["eventName"] == OBJECT_REMOVED_DELETE
    assert record["s3"]["object"]["key"] == "in%2Fphoto+1.jpg"
    assert record["s3"]["object"]["versionId"] == "v9"
    assert not {"size", "eTag", "contentType", "userMetadata"} & set(record["s3"]["object"])
    [parsed] = parse_minio_notification(minio_notification(record))
    assert (parsed.event_name, parsed.key, parsed.size, parsed.etag) == (
        OBJECT_REMOVED_DELETE,
        "in/photo 1.jpg",
        None,
        None,
    )
    assert parsed.version_id == "v9"


def test_notification_message_is_minio_nats_shape() -> None:
    record = object_created_record(info())
    message = orjson.loads(minio_notification(record))
    assert message == {
        "EventName": OBJECT_CREATED_PUT,
        "Key": "uploads/in/photo 1.jpg",
        "Records": [record],
    }


TRICKY_KEYS = [
    "with space.txt",
    "dir/sub dir/file.bin",
    "plus+sign",
    "percent%41literal",
    "%2F not a slash",
    "ünïcødé/日本語 😀.txt",
    "a+b %2B c/+/%",
]


@pytest.mark.parametrize("key", TRICKY_KEYS)
def test_escaped_keys_parse_back_exactly(key: str) -> None:
    body = minio_notification(object_created_record(info(key=key), time=WHEN))
    [record] = parse_minio_notification(body)
    assert record.key == key
    assert record.bucket == "uploads"
    assert record.event_name == OBJECT_CREATED_PUT
    assert (record.size, record.etag, record.content_type) == (5, info().etag, "image/jpeg")
    assert record.user_metadata == {"project": "deepfaas"}
    assert record.time == WHEN.replace(microsecond=123000)
    assert record.raw["s3"]["object"]["key"] == escape_key(key)


def minio_message(**changes: Any) -> dict[str, Any]:
    """A message as MinIO's NATS target sends it, written out by hand."""
    record: dict[str, Any] = {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": "",
        "eventTime": "2026-11-25T09:27:27.000Z",
        "eventName": "s3:ObjectCreated:CompleteMultipartUpload",
        "userIdentity": {"principalId": "minioadmin"},
        "requestParameters": {
            "principalId": "minioadmin",
            "region": "",
            "sourceIPAddress": "10.0.0.7",
        },
        "responseElements": {
            "x-amz-request-id": "187B3D2A9F1C0E55",
            "x-minio-deployment-id": "d7c1e0f4-2b1a-4c55-9a7e-0d5c1b2a3f4e",
            "x-minio-origin-endpoint": "http://10.0.0.2:9000",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "Config",
            "bucket": {
                "name": "datasets",
                "ownerIdentity": {"principalId": "minioadmin"},
                "arn": "arn:aws:s3:::datasets",
            },
            "object": {
                "key": "runs%2F2026%2Fscan+%237+%2B+notes.tif",
                "size": 73400320,
                "eTag": "9b2cf535f27731c974343645a3985328-14",
                "contentType": "image/tiff",
                "userMetadata": {"X-Amz-Meta-Owner": "lab-3", "content-type": "image/tiff"},
                "sequencer": "187B3D2AA0E2C4F1",
            },
        },
        "source": {"host": "10.0.0.7", "port": "", "userAgent": "MinIO (linux; amd64) minio-go/v7"},
    }
    message: dict[str, Any] = {
        "EventName": "s3:ObjectCreated:CompleteMultipartUpload",
        "Key": "datasets/runs/2026/scan #7 + notes.tif",
        "Records": [record],
    }
    for path, value in changes.items():
        target: Any = message
        *parents, last = path.split(".")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value
    return message


_DELETE = object()


def test_minio_message_parses() -> None:
    [record] = parse_minio_notification(orjson.dumps(minio_message()))
    assert record.bucket == "datasets"
    assert record.key == "runs/2026/scan #7 + notes.tif"
    assert record.event_name == OBJECT_CREATED_MULTIPART and record.event_source == "minio:s3"
    assert (record.size, record.etag) == (73400320, "9b2cf535f27731c974343645a3985328-14")
    assert record.user_metadata == {"owner": "lab-3"}
    assert record.sequencer == "187B3D2AA0E2C4F1"
    assert record.time == datetime(2026, 11, 25, 9, 27, 27, tzinfo=UTC)
    assert record.raw["responseElements"]["x-minio-deployment-id"].startswith("d7c1")


def test_aws_style_message_without_event_name_and_key_parses() -> None:
    message = minio_message(EventName=_DELETE, Key=_DELETE)
    [record] = parse_minio_notification(orjson.dumps(message))
    assert record.key == "runs/2026/scan #7 + notes.tif"


@pytest.mark.parametrize(
    ("body", "reason_part"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not a storage notification"),
        (orjson.dumps({"EventName": "x"}), "not a storage notification"),
        (orjson.dumps(minio_message(Records=[])), "not a storage notification"),
        (orjson.dumps(minio_message(Records=["x"])), "not a storage notification"),
        (orjson.dumps(minio_message(**{"Records.0.s3": _DELETE})), "record 0"),
        (orjson.dumps(minio_message(**{"Records.0.s3.object.key": ""})), "record 0"),
        (orjson.dumps(minio_message(**{"Records.0.s3.object.size": "5"})), "record 0"),
        (orjson.dumps(minio_message(**{"Records.0.s3.object.size": -1})), "record 0"),
        (orjson.dumps(minio_message(**{"Records.0.s3.bucket.name": 7})), "record 0"),
        (orjson.dumps(minio_message(**{"Records.0.eventTime": "yesterday"})), "record 0"),
        (orjson.dumps(minio_message(**{"Records.0.eventName": _DELETE})), "record 0"),
        (orjson.dumps(minio_message(**{"Records.0.s3.object.key": "bad%zzescape"})), "escaped"),
        (orjson.dumps(minio_message(**{"Records.0.s3.object.key": "trailing%2"})), "escaped"),
        (orjson.dumps(minio_message(**{"Records.0.s3.object.key": "not%FFutf8"})), "escaped"),
        (orjson.dumps(minio_message(Key="datasets/other")), "does not match"),
        (orjson.dumps(minio_message(EventName="s3:ObjectRemoved:Delete")), "does not match"),
    ],
)
def test_malformed_messages_are_rejected(body: bytes, reason_part: str) -> None:
    with pytest.raises(InvalidNotificationError) as caught:
        parse_minio_notification(body)
    assert reason_part in (caught.value.reason or "")
    assert caught.value.code == "invalid"
    assert isinstance(caught.value.fields["errors"], list)
