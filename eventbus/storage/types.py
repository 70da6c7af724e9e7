"""Contracts of storage: the ``Storage`` protocol and the values it returns.

Every backend validates keys and bucket names (``keys``) before anything else, so all accept
and refuse the same ones. ``put`` streams: a body is never held whole, the object appears
whole or not at all, and with ``size`` given a body of another length raises
SizeMismatchError and stores nothing. ``get`` raises its errors (missing bucket or key, bad
range) itself, not from the stream; consume the stream or ``aclose()`` it. Listings are in
key order (S3 orders by the UTF-8 bytes of keys); a page holds the keys and common prefixes
that sort after ``start_after``. ``delete`` of a missing key succeeds, as in S3, returning
False. Presigned URLs exist on S3 only; the local backend raises UnsupportedOperationError.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Protocol

#: content type stored when the caller gives none
DEFAULT_CONTENT_TYPE: Final = "application/octet-stream"
#: size of the chunks that ``get`` yields and that backends read and write at a time
CHUNK_SIZE: Final = 1024 * 1024
#: most entries one ``list`` call returns (the S3 ``max-keys`` cap)
MAX_LIST_LIMIT: Final = 1000
#: the default lifetime of a presigned URL
DEFAULT_PRESIGN_EXPIRY: Final = timedelta(hours=1)

#: what ``put`` accepts as a body: bytes in memory, or a stream of chunks
Body = bytes | AsyncIterable[bytes]


@dataclass(frozen=True)
class BucketInfo:
    """A bucket and when it was created (``None`` where the store does not say)."""

    name: str
    created: datetime | None = None


@dataclass(frozen=True)
class ObjectInfo:
    """What a store knows of one object; ``metadata`` keys are lower-case, unprefixed."""

    bucket: str
    key: str
    size: int
    etag: str
    content_type: str
    last_modified: datetime
    metadata: Mapping[str, str] = field(default_factory=dict)
    version_id: str | None = None

    @property
    def is_multipart(self) -> bool:
        """Whether the ETag has the ``<md5>-<parts>`` form of a multipart upload."""
        head, sep, parts = self.etag.rpartition("-")
        return bool(sep and head and parts.isdigit())


@dataclass(frozen=True)
class ObjectSummary:
    """One object as a listing shows it (S3 listings carry no content type or metadata)."""

    bucket: str
    key: str
    size: int
    etag: str
    last_modified: datetime


@dataclass(frozen=True)
class ListResult:
    """One page of a listing; pass ``next_marker`` back as ``start_after`` for the next."""

    objects: tuple[ObjectSummary, ...]
    prefixes: tuple[str, ...] = ()
    is_truncated: bool = False
    next_marker: str | None = None


class ByteStream(Protocol):
    """An object's bytes in chunks; ``aclose()`` frees the file or connection early."""

    def __aiter__(self) -> ByteStream:
        """The stream itself."""
        ...

    async def __anext__(self) -> bytes:
        """The next chunk (never empty); StopAsyncIteration at the end."""
        ...

    async def aclose(self) -> None:
        """Stop reading and free the file or connection; safe to call twice."""
        ...


class Storage(Protocol):
    """An object store: buckets of keyed objects, streamed in and out."""

    @property
    def name(self) -> str:
        """Short backend name: ``"local"`` or ``"s3"``."""
        ...

    @property
    def source(self) -> str:
        """URI identifying this store, for the CloudEvent ``source`` of its storage events."""
        ...

    async def create_bucket(self, bucket: str) -> BucketInfo:
        """Create a bucket; BucketExistsError if it exists."""
        ...

    async def list_buckets(self) -> tuple[BucketInfo, ...]:
        """All buckets, sorted by name."""
        ...

    async def bucket_exists(self, bucket: str) -> bool:
        """Whether the bucket exists."""
        ...

    async def delete_bucket(self, bucket: str) -> None:
        """Delete an empty bucket; BucketNotEmptyError if it still holds objects."""
        ...

    async def put(
        self,
        bucket: str,
        key: str,
        data: Body,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
        size: int | None = None,
    ) -> ObjectInfo:
        """Store an object whole or not at all, streamed; ``size`` is checked if given."""
        ...

    async def get(
        self, bucket: str, key: str, *, offset: int = 0, length: int | None = None
    ) -> tuple[ObjectInfo, ByteStream]:
        """The object's info and its bytes from ``offset`` (``length`` at most) in chunks."""
        ...

    async def stat(self, bucket: str, key: str) -> ObjectInfo:
        """The object's info without its bytes."""
        ...

    async def list(
        self,
        bucket: str,
        prefix: str = "",
        delimiter: str | None = None,
        start_after: str | None = None,
        limit: int = MAX_LIST_LIMIT,
    ) -> ListResult:
        """One page of at most ``limit`` keys and common prefixes, in key order."""
        ...

    async def delete(self, bucket: str, key: str) -> bool:
        """Delete an object; True if it existed (a missing key is not an error)."""
        ...

    async def presigned_get_url(
        self, bucket: str, key: str, *, expires: timedelta = DEFAULT_PRESIGN_EXPIRY
    ) -> str:
        """A URL that downloads the object without credentials until it expires."""
        ...

    async def presigned_put_url(
        self, bucket: str, key: str, *, expires: timedelta = DEFAULT_PRESIGN_EXPIRY
    ) -> str:
        """A URL that uploads the object (HTTP PUT) without credentials until it expires."""
        ...

    async def close(self) -> None:
        """Release threads and connections; the store is unusable afterwards."""
        ...
