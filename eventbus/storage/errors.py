"""Errors of the storage backends: one root, structured fields (bucket, key, reason)."""

from __future__ import annotations

from typing import Any

from eventbus.errors import ConflictError, DeepfaasError, NotFoundError, ValidationFailedError


class StorageError(DeepfaasError):
    """Root of storage errors; ``bucket``, ``key`` and ``reason`` say what failed and why."""

    code = "storage"

    def __init__(
        self,
        message: str,
        *,
        bucket: str | None = None,
        key: str | None = None,
        reason: str | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(message, bucket=bucket, key=key, reason=reason, **fields)
        self.bucket = bucket
        self.key = key
        self.reason = reason


class InvalidArgumentError(StorageError, ValidationFailedError):
    """An argument (prefix, limit, range, content type, expiry, size) is not acceptable."""

    code = "invalid"


class InvalidBucketNameError(InvalidArgumentError):
    """The bucket name breaks the S3 naming rules."""


class InvalidKeyError(InvalidArgumentError):
    """The object key is unsafe or breaks the key rules; ``reason`` says which rule."""


class InvalidMetadataError(InvalidArgumentError):
    """User metadata has a bad name or value, or is too large."""


class InvalidRangeError(InvalidArgumentError):
    """The byte range asked for lies outside the object."""


class SizeMismatchError(InvalidArgumentError):
    """The body carried more or fewer bytes than the declared size; nothing was stored."""


class InvalidNotificationError(InvalidArgumentError):
    """A storage notification message (MinIO/S3 event records) is malformed."""


class NoSuchBucketError(StorageError, NotFoundError):
    """The bucket does not exist."""

    code = "not_found"


class NoSuchKeyError(StorageError, NotFoundError):
    """The object does not exist in the bucket."""

    code = "not_found"


class BucketExistsError(StorageError, ConflictError):
    """The bucket exists already."""

    code = "conflict"


class BucketNotEmptyError(StorageError, ConflictError):
    """The bucket still holds objects, so it cannot be deleted."""

    code = "conflict"


class KeyConflictError(StorageError, ConflictError):
    """The key clashes with another key's path (local backend: ``a`` and ``a/b``)."""

    code = "conflict"


class StorageUnavailableError(StorageError):
    """The store did not answer, or answered with a transient server error."""

    code = "unavailable"


class UnsupportedOperationError(StorageError):
    """The backend cannot do this at all (e.g. presigned URLs on the local backend)."""

    code = "unsupported"
