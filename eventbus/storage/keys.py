"""Validation of bucket names, object keys, prefixes, metadata and ranges, shared by backends.

Bucket names follow the S3 rules. A safe key is not blank, has at most 1024 bytes of valid
UTF-8, no control characters or backslashes, no leading ``/``, and no empty, ``.`` or ``..``
path segment (so no trailing ``/`` either), each segment at most 255 bytes: every key maps to
one file path on any file system. Metadata names are 1-128 of ``a-z 0-9 _ . -`` (case-
insensitive, as HTTP headers are); values are printable ASCII without leading or trailing
blanks, 2 KiB in all, so they survive HTTP headers exactly.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from datetime import timedelta
from typing import Final

from eventbus.storage.errors import (
    InvalidArgumentError,
    InvalidBucketNameError,
    InvalidKeyError,
    InvalidMetadataError,
)
from eventbus.storage.types import DEFAULT_CONTENT_TYPE, MAX_LIST_LIMIT

MAX_KEY_BYTES: Final = 1024
#: one path segment must fit a file name on common file systems
MAX_SEGMENT_BYTES: Final = 255
MAX_METADATA_BYTES: Final = 2048
MAX_PRESIGN_EXPIRY: Final = timedelta(days=7)

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4 = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
_META_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,127}")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_CONTENT_TYPE = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,254}")


def validate_bucket_name(bucket: str) -> str:
    """Return ``bucket`` if it follows the S3 naming rules, else raise InvalidBucketNameError."""
    reason = _bucket_problem(bucket)
    if reason is not None:
        raise InvalidBucketNameError(
            f"invalid bucket name {bucket!r}: {reason}", bucket=bucket, reason=reason
        )
    return bucket


def is_valid_bucket_name(bucket: str) -> bool:
    """Whether ``validate_bucket_name`` would accept ``bucket``."""
    return _bucket_problem(bucket) is None


def _bucket_problem(bucket: str) -> str | None:
    if not isinstance(bucket, str) or not _BUCKET.fullmatch(bucket):
        return (
            "must be 3-63 characters of lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit"
        )
    if ".." in bucket or ".-" in bucket or "-." in bucket:
        return "must not contain '..', '.-' or '-.'"
    if _IPV4.fullmatch(bucket):
        return "must not look like an IP address"
    if bucket.startswith(("xn--", "sthree-")) or bucket.endswith(("-s3alias", "--ol-s3")):
        return "uses a prefix or suffix reserved by S3"
    return None


def validate_key(key: str, *, bucket: str | None = None) -> str:
    """Return ``key`` if it is a safe object key, else raise InvalidKeyError with the reason."""
    reason = _key_problem(key)
    if reason is not None:
        raise InvalidKeyError(
            f"invalid object key {key!r}: {reason}", bucket=bucket, key=key, reason=reason
        )
    return key


def validate_object(bucket: str, key: str) -> None:
    """Validate a bucket name and a key, in that order."""
    validate_bucket_name(bucket)
    validate_key(key, bucket=bucket)


def is_valid_key(key: str) -> bool:
    """Whether ``validate_key`` would accept ``key``."""
    return _key_problem(key) is None


def _key_problem(key: str) -> str | None:
    if not isinstance(key, str) or not key.strip():
        return "must not be empty or blank"
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid UTF-8 (no lone surrogates)"
    if len(encoded) > MAX_KEY_BYTES:
        return f"is {len(encoded)} bytes of UTF-8, more than {MAX_KEY_BYTES}"
    for index, char in enumerate(key):
        if unicodedata.category(char) == "Cc":
            return f"contains control character U+{ord(char):04X} at index {index}"
    if "\\" in key:
        return "must not contain a backslash"
    if key.startswith("/"):
        return "must not be an absolute path (leading '/')"
    for segment in key.split("/"):
        if not segment:
            return "must not have an empty path segment ('//' or a trailing '/')"
        if segment in (".", ".."):
            return f"must not have a {segment!r} path segment"
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            return f"has a path segment longer than {MAX_SEGMENT_BYTES} bytes"
    return None


def validate_prefix(prefix: str, *, bucket: str | None = None) -> str:
    """Return a listing prefix if it is at most 1024 bytes without control characters."""
    if len(prefix.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES or any(
        unicodedata.category(char) in ("Cc", "Cs") for char in prefix
    ):
        raise InvalidArgumentError(
            f"invalid listing prefix {prefix!r}", bucket=bucket, reason="bad prefix"
        )
    return prefix


def validate_list_args(
    prefix: str, delimiter: str | None, start_after: str | None, limit: int, *, bucket: str
) -> None:
    """Check a listing's prefix and start, delimiter (non-empty if given), limit (1 to 1000)."""
    validate_prefix(prefix, bucket=bucket)
    validate_prefix(start_after or "", bucket=bucket)
    if delimiter is not None and (not delimiter or "\x00" in delimiter):
        raise InvalidArgumentError(
            "the delimiter must be a non-empty string", bucket=bucket, reason="bad delimiter"
        )
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidArgumentError(
            f"limit must be an integer from 1 to {MAX_LIST_LIMIT}, not {limit!r}",
            bucket=bucket,
            reason="bad limit",
        )


def normalize_metadata(
    metadata: Mapping[str, str] | None, *, bucket: str | None = None, key: str | None = None
) -> dict[str, str]:
    """Lower-case metadata names; check names, values and total size (InvalidMetadataError)."""
    result: dict[str, str] = {}
    total = 0
    for raw_name, value in (metadata or {}).items():
        name = raw_name.lower() if isinstance(raw_name, str) else raw_name
        reason = None
        if not isinstance(name, str) or not _META_NAME.fullmatch(name):
            reason = f"metadata name {raw_name!r} must be 1-128 of a-z, 0-9, '_', '.', '-'"
        elif name in result:
            reason = f"metadata name {raw_name!r} is given twice (names ignore case)"
        elif not isinstance(value, str) or not _PRINTABLE.fullmatch(value):
            reason = f"metadata value of {raw_name!r} must be printable ASCII"
        elif value != value.strip():
            reason = f"metadata value of {raw_name!r} has leading or trailing blanks"
        if reason is not None:
            raise InvalidMetadataError(reason, bucket=bucket, key=key, reason=reason)
        result[name] = value
        total += len(name) + len(value)
    if total > MAX_METADATA_BYTES:
        reason = f"metadata is {total} bytes, more than {MAX_METADATA_BYTES}"
        raise InvalidMetadataError(reason, bucket=bucket, key=key, reason=reason)
    return result


def validate_content_type(content_type: str | None, *, bucket: str, key: str) -> str:
    """Return the content type (the default if empty) if it is printable ASCII."""
    if not content_type:
        return DEFAULT_CONTENT_TYPE
    if not isinstance(content_type, str) or not _CONTENT_TYPE.fullmatch(content_type):
        raise InvalidArgumentError(
            f"invalid content type {content_type!r}",
            bucket=bucket,
            key=key,
            reason="content type must be 1-255 printable ASCII characters",
        )
    return content_type


def validate_range(offset: int, length: int | None, *, bucket: str, key: str) -> None:
    """Check a byte range's shape: ``offset`` >= 0, ``length`` None or >= 1."""
    if offset < 0 or (length is not None and length < 1):
        raise InvalidArgumentError(
            f"invalid byte range offset={offset} length={length}",
            bucket=bucket,
            key=key,
            reason="offset must be >= 0 and length >= 1",
        )


def validate_size(size: int | None, *, bucket: str, key: str) -> None:
    """Check a declared body size (None or >= 0)."""
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise InvalidArgumentError(
            f"invalid size {size!r}", bucket=bucket, key=key, reason="size must be >= 0"
        )


def validate_expiry(expires: timedelta, *, bucket: str, key: str) -> None:
    """Check a presigned URL lifetime: from one second to seven days (the SigV4 limit)."""
    if not timedelta(seconds=1) <= expires <= MAX_PRESIGN_EXPIRY:
        raise InvalidArgumentError(
            f"presigned URL expiry {expires} must be from 1 second to 7 days",
            bucket=bucket,
            key=key,
            reason="bad expiry",
        )
