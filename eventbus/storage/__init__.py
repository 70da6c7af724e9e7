"""Object storage behind one protocol: a local directory or any S3 endpoint."""

from typing import TYPE_CHECKING

from eventbus.storage.errors import (
    BucketExistsError,
    BucketNotEmptyError,
    InvalidArgumentError,
    InvalidBucketNameError,
    InvalidKeyError,
    InvalidMetadataError,
    InvalidNotificationError,
    InvalidRangeError,
    KeyConflictError,
    NoSuchBucketError,
    NoSuchKeyError,
    SizeMismatchError,
    StorageError,
    StorageUnavailableError,
    UnsupportedOperationError,
)
from eventbus.storage.keys import (
    is_valid_key,
    normalize_metadata,
    validate_bucket_name,
    validate_key,
)
from eventbus.storage.local import LocalStorage
from eventbus.storage.records import (
    OBJECT_CREATED_MULTIPART,
    OBJECT_CREATED_PUT,
    OBJECT_REMOVED_DELETE,
    RecordContext,
    S3Record,
    escape_key,
    minio_notification,
    object_created_record,
    object_removed_record,
    parse_minio_notification,
    unescape_key,
)

if TYPE_CHECKING:
    from eventbus.storage.s3 import S3Storage
from eventbus.storage.types import (
    DEFAULT_CONTENT_TYPE,
    BucketInfo,
    ByteStream,
    ListResult,
    ObjectInfo,
    ObjectSummary,
    Storage,
)

__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "OBJECT_CREATED_MULTIPART",
    "OBJECT_CREATED_PUT",
    "OBJECT_REMOVED_DELETE",
    "BucketExistsError",
    "BucketInfo",
    "BucketNotEmptyError",
    "ByteStream",
    "InvalidArgumentError",
    "InvalidBucketNameError",
    "InvalidKeyError",
    "InvalidMetadataError",
    "InvalidNotificationError",
    "InvalidRangeError",
    "KeyConflictError",
    "ListResult",
    "LocalStorage",
    "NoSuchBucketError",
    "NoSuchKeyError",
    "ObjectInfo",
    "ObjectSummary",
    "RecordContext",
    "S3Record",
    "S3Storage",
    "SizeMismatchError",
    "Storage",
    "StorageError",
    "StorageUnavailableError",
    "UnsupportedOperationError",
    "escape_key",
    "is_valid_key",
    "minio_notification",
    "normalize_metadata",
    "object_created_record",
    "object_removed_record",
    "parse_minio_notification",
    "unescape_key",
    "validate_bucket_name",
    "validate_key",
]


def __getattr__(name: str) -> object:
    # The S3 backend imports the minio SDK (and its HTTP stack): only the processes that use
    # it pay for that, not every importer of a storage error or type (a sandboxed runner).
    if name == "S3Storage":
        from eventbus.storage.s3 import S3Storage

        return S3Storage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
