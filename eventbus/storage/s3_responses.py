"""Reading S3 answers: error translation, object headers, listing order."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

import urllib3
from minio.datatypes import Object
from minio.error import MinioException, S3Error, ServerError

from eventbus.storage.errors import (
    BucketExistsError,
    BucketNotEmptyError,
    InvalidArgumentError,
    InvalidBucketNameError,
    InvalidKeyError,
    InvalidRangeError,
    NoSuchBucketError,
    NoSuchKeyError,
    StorageError,
    StorageUnavailableError,
)
from eventbus.storage.types import DEFAULT_CONTENT_TYPE, ObjectInfo, ObjectSummary

#: what the SDK and the HTTP stack beneath it raise
SDK_ERRORS: Final = (MinioException, urllib3.exceptions.HTTPError, OSError)
#: S3 returns at most this many entries (contents and common prefixes) per listing request
_SERVER_PAGE: Final = 1000
_META_PREFIX: Final = "x-amz-meta-"

_BY_CODE: Final[dict[str, type[StorageError]]] = {
    "NoSuchBucket": NoSuchBucketError,
    "NoSuchKey": NoSuchKeyError,
    "BucketAlreadyOwnedByYou": BucketExistsError,
    "BucketAlreadyExists": BucketExistsError,
    "BucketNotEmpty": BucketNotEmptyError,
    "InvalidRange": InvalidRangeError,
    "InvalidBucketName": InvalidBucketNameError,
    "KeyTooLongError": InvalidKeyError,
    "InvalidArgument": InvalidArgumentError,
    "SlowDown": StorageUnavailableError,
    "ServiceUnavailable": StorageUnavailableError,
    "InternalError": StorageUnavailableError,
    "RequestTimeout": StorageUnavailableError,
}


def translate_error(exc: BaseException, bucket: str | None, key: str | None) -> StorageError:
    """The StorageError for an SDK, HTTP or socket error (S3 error codes mapped one by one)."""
    if isinstance(exc, S3Error):
        code = exc.code or "unknown"
        status = getattr(exc.response, "status", 0) or 0
        default = StorageUnavailableError if status >= 500 else StorageError
        cls = _BY_CODE.get(code, default)
        return cls(f"S3 {code}: {exc.message}", bucket=bucket, key=key, reason=code)
    if isinstance(exc, ServerError):
        cls = StorageUnavailableError if exc.status_code >= 500 else StorageError
        return cls(str(exc), bucket=bucket, key=key, reason=f"HTTP {exc.status_code}")
    if isinstance(exc, MinioException):
        return StorageError(str(exc), bucket=bucket, key=key, reason="invalid response")
    return StorageUnavailableError(
        f"S3 endpoint unreachable: {exc}", bucket=bucket, key=key, reason=type(exc).__name__
    )


def info_from_headers(bucket: str, key: str, headers: Mapping[str, str]) -> ObjectInfo:
    """ObjectInfo from GET/HEAD response headers (size from Content-Range when ranged)."""
    lower = {name.lower(): value for name, value in headers.items()}
    total = lower.get("content-range", "").rpartition("/")[2]
    size = int(total) if total.isdigit() else int(lower.get("content-length") or 0)
    modified = lower.get("last-modified")
    return ObjectInfo(
        bucket,
        key,
        size,
        lower.get("etag", "").strip('"'),
        lower.get("content-type") or DEFAULT_CONTENT_TYPE,
        parsedate_to_datetime(modified) if modified else datetime.now(UTC),
        {
            name[len(_META_PREFIX) :]: value
            for name, value in lower.items()
            if name.startswith(_META_PREFIX)
        },
        version_or_none(lower.get("x-amz-version-id")),
    )


def info_from_stat(bucket: str, key: str, found: Object) -> ObjectInfo:
    """ObjectInfo from the SDK's ``stat_object`` answer."""
    info = info_from_headers(bucket, key, found.metadata or {})
    return ObjectInfo(
        bucket,
        key,
        found.size if found.size is not None else info.size,
        (found.etag or info.etag).strip('"'),
        found.content_type or info.content_type,
        found.last_modified or info.last_modified,
        info.metadata,
        version_or_none(found.version_id),
    )


def summary_of(bucket: str, found: Object) -> ObjectSummary:
    """ObjectSummary of one listed object."""
    return ObjectSummary(
        bucket,
        found.object_name or "",
        found.size or 0,
        (found.etag or "").strip('"'),
        found.last_modified or datetime.now(UTC),
    )


def version_or_none(version_id: str | None) -> str | None:
    """A version id, or None where the bucket is unversioned (S3 may say ``"null"``)."""
    return None if version_id in (None, "", "null") else version_id


def in_key_order(found: Iterable[Object]) -> Iterator[tuple[str, Object | None]]:
    """Merge each response page's contents and common prefixes (S3 sends them apart)."""
    # Within a page, contents come first, then prefixes, each sorted; pages follow in order.
    # A prefix releases the pending contents before it; contents after prefixes start a new
    # page. Contents pending beyond one page's worth cannot share a page with any prefix to
    # come, so the buffer never grows past one page and no listing is read to its end.
    pending: deque[tuple[str, Object]] = deque()
    after_prefixes = False
    for obj in found:
        name = obj.object_name or ""
        if obj.is_dir and obj.etag is None and obj.size is None:  # a common prefix
            while pending and pending[0][0] < name:
                yield pending.popleft()
            after_prefixes = True
            yield name, None
            continue
        if after_prefixes:
            yield from pending
            pending.clear()
            after_prefixes = False
        pending.append((name, obj))
        if len(pending) > _SERVER_PAGE:
            yield pending.popleft()
    yield from pending
