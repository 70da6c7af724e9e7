"""The S3 backend: any S3 endpoint (MinIO, Ceph RGW, SeaweedFS, AWS, moto) via the minio SDK.

The SDK is synchronous: short calls run in ``asyncio.to_thread``, uploads in this store's
own threads (``bridge.run_upload``). SDK errors are translated here, once, into StorageErrors.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import BinaryIO, Final, ParamSpec, TypeVar, cast

import urllib3
from minio import Minio
from minio.datatypes import Object
from minio.helpers import ObjectWriteResult

from eventbus.storage.bridge import ChunkReader, ChunkStream, run_upload
from eventbus.storage.errors import (
    BucketExistsError,
    InvalidArgumentError,
    NoSuchBucketError,
    NoSuchKeyError,
)
from eventbus.storage.keys import (
    normalize_metadata,
    validate_bucket_name,
    validate_content_type,
    validate_expiry,
    validate_list_args,
    validate_object,
    validate_range,
    validate_size,
)
from eventbus.storage.listing import paginate
from eventbus.storage.s3_responses import (
    SDK_ERRORS,
    in_key_order,
    info_from_headers,
    info_from_stat,
    summary_of,
    translate_error,
    version_or_none,
)
from eventbus.storage.types import (
    CHUNK_SIZE,
    DEFAULT_CONTENT_TYPE,
    DEFAULT_PRESIGN_EXPIRY,
    MAX_LIST_LIMIT,
    Body,
    BucketInfo,
    ByteStream,
    ListResult,
    ObjectInfo,
)

P = ParamSpec("P")
T = TypeVar("T")

MIN_PART_SIZE: Final = 5 * 1024 * 1024
MAX_PART_SIZE: Final = 5 * 1024 * 1024 * 1024
MAX_PARTS: Final = 10_000
#: default multipart part size: bodies of unknown size may reach 10,000 parts (~156 GiB)
DEFAULT_PART_SIZE: Final = 16 * 1024 * 1024


class S3Storage:
    """Storage on an S3 endpoint (``host[:port]``); large bodies go up as multipart uploads."""

    # Parts of one object go up one after another (one part in memory, two at the peak);
    # at most max_uploads objects go up at once.

    def __init__(
        self,
        endpoint: str,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        session_token: str | None = None,
        secure: bool = True,
        region: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        max_uploads: int = 8,
        http_client: urllib3.PoolManager | None = None,
    ) -> None:
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise InvalidArgumentError(
                f"part_size must be from 5 MiB to 5 GiB, not {part_size}", reason="bad part size"
            )
        try:
            self._client = Minio(
                endpoint,
                access_key=access_key,
                secret_key=secret_key,
                session_token=session_token,
                secure=secure,
                region=region,
                http_client=http_client,
            )
        except ValueError as exc:
            raise InvalidArgumentError(
                f"invalid S3 endpoint {endpoint!r}: {exc}", reason="bad endpoint"
            ) from exc
        self._region = region
        self._part_size = part_size
        self._source = f"{'https' if secure else 'http'}://{endpoint}"
        self._uploads = ThreadPoolExecutor(max_uploads, thread_name_prefix="storage-s3")

    @property
    def name(self) -> str:
        """Always ``"s3"``."""
        return "s3"

    @property
    def source(self) -> str:
        """The endpoint URL, e.g. ``http://127.0.0.1:9000``."""
        return self._source

    async def _call(
        self, bucket: str | None, key: str | None, func: Callable[P, T], *a: P.args, **k: P.kwargs
    ) -> T:
        try:
            return await asyncio.to_thread(func, *a, **k)
        except SDK_ERRORS as exc:
            raise translate_error(exc, bucket, key) from exc

    async def create_bucket(self, bucket: str) -> BucketInfo:
        """Create a bucket; BucketExistsError if it exists."""
        validate_bucket_name(bucket)
        # checked first: AWS us-east-1 answers 200 to re-creating one's own bucket
        if await self.bucket_exists(bucket):
            raise BucketExistsError(f"bucket {bucket!r} exists", bucket=bucket)
        await self._call(bucket, None, self._client.make_bucket, bucket, self._region)
        return BucketInfo(bucket, datetime.now(UTC))

    async def list_buckets(self) -> tuple[BucketInfo, ...]:
        """All buckets the credentials see, sorted by name."""
        found = await self._call(None, None, self._client.list_buckets)
        infos = (BucketInfo(bucket.name, bucket.creation_date) for bucket in found)
        return tuple(sorted(infos, key=lambda info: info.name))

    async def bucket_exists(self, bucket: str) -> bool:
        """Whether the bucket exists (a HEAD request)."""
        validate_bucket_name(bucket)
        return await self._call(bucket, None, self._client.bucket_exists, bucket)

    async def delete_bucket(self, bucket: str) -> None:
        """Delete an empty bucket; BucketNotEmptyError otherwise."""
        validate_bucket_name(bucket)
        await self._call(bucket, None, self._client.remove_bucket, bucket)

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
        """One PUT up to ``part_size``, else a multipart upload (aborted if it fails)."""
        # last_modified is the client's clock: an S3 PUT does not return the server's
        validate_object(bucket, key)
        content_type = validate_content_type(content_type, bucket=bucket, key=key)
        meta = normalize_metadata(metadata, bucket=bucket, key=key)
        validate_size(size, bucket=bucket, key=key)
        if size is None and isinstance(data, bytes | bytearray | memoryview):
            size = len(data)
        length = -1 if size is None else size
        part_size = self._part_size
        if size is not None and size > part_size * MAX_PARTS:
            part_size = math.ceil(size / MAX_PARTS / 2**20) * 2**20
        reader = ChunkReader(data, asyncio.get_running_loop(), size=size, bucket=bucket, key=key)
        headers: dict[str, str | list[str] | tuple[str]] = {
            "x-amz-meta-" + name: value for name, value in meta.items()
        }

        def upload() -> ObjectWriteResult:
            if length == 0:
                reader.read(1)  # the SDK reads nothing then: check the body is empty first
            return self._client.put_object(
                bucket,
                key,
                cast(BinaryIO, reader),
                length,
                content_type=content_type,
                metadata=headers,
                part_size=part_size,
                num_parallel_uploads=1,
            )

        try:
            result = await run_upload(self._uploads, reader, upload)
        except SDK_ERRORS as exc:
            raise translate_error(exc, bucket, key) from exc
        return ObjectInfo(
            bucket,
            key,
            reader.bytes_read,
            (result.etag or "").strip('"'),
            content_type,
            result.last_modified or datetime.now(UTC),
            meta,
            version_or_none(result.version_id),
        )

    async def get(
        self, bucket: str, key: str, *, offset: int = 0, length: int | None = None
    ) -> tuple[ObjectInfo, ByteStream]:
        """One GET (ranged if asked); the info comes from its headers, the bytes stream."""
        validate_object(bucket, key)
        validate_range(offset, length, bucket=bucket, key=key)
        get_object = self._client.get_object
        response = await self._call(bucket, key, get_object, bucket, key, offset, length or 0)
        try:
            info = info_from_headers(bucket, key, response.headers)
        except BaseException:
            response.close()
            response.release_conn()
            raise

        def read() -> bytes:
            try:
                return response.read(CHUNK_SIZE)
            except SDK_ERRORS as exc:
                raise translate_error(exc, bucket, key) from exc

        def close() -> None:
            response.close()
            response.release_conn()

        return info, ChunkStream(read, close)

    async def stat(self, bucket: str, key: str) -> ObjectInfo:
        """A HEAD request; a 404 is told apart as missing bucket or key with one more."""
        validate_object(bucket, key)
        try:
            found: Object = await self._call(bucket, key, self._client.stat_object, bucket, key)
        except NoSuchKeyError:
            # a HEAD answer has no body, so a missing bucket looks like a missing key
            if not await self.bucket_exists(bucket):
                raise NoSuchBucketError(
                    f"bucket {bucket!r} does not exist", bucket=bucket
                ) from None
            raise
        return info_from_stat(bucket, key, found)

    async def list(
        self,
        bucket: str,
        prefix: str = "",
        delimiter: str | None = None,
        start_after: str | None = None,
        limit: int = MAX_LIST_LIMIT,
    ) -> ListResult:
        """ListObjectsV2; the server groups by ``/``, other delimiters are grouped here."""
        validate_bucket_name(bucket)
        validate_list_args(prefix, delimiter, start_after, limit, bucket=bucket)
        return await self._call(
            bucket, None, self._list_page, bucket, prefix, delimiter, start_after, limit
        )

    def _list_page(
        self, bucket: str, prefix: str, delimiter: str | None, start_after: str | None, limit: int
    ) -> ListResult:
        found = self._client.list_objects(
            bucket, prefix=prefix or None, recursive=delimiter != "/", start_after=start_after
        )
        if delimiter == "/":
            items = in_key_order(found)
        else:
            items = ((obj.object_name or "", obj) for obj in found)
        page = paginate(
            items, prefix=prefix, delimiter=delimiter, start_after=start_after, limit=limit
        )
        summaries = tuple(summary_of(bucket, obj) for obj in page.objects)
        return ListResult(summaries, tuple(page.prefixes), page.is_truncated, page.next_marker)

    async def delete(self, bucket: str, key: str) -> bool:
        """DELETE the object; True if a HEAD just before found it (S3 DELETE does not say)."""
        validate_object(bucket, key)
        try:
            await self.stat(bucket, key)
            existed = True
        except NoSuchKeyError:
            existed = False
        await self._call(bucket, key, self._client.remove_object, bucket, key)
        return existed

    async def presigned_get_url(
        self, bucket: str, key: str, *, expires: timedelta = DEFAULT_PRESIGN_EXPIRY
    ) -> str:
        """A SigV4 presigned GET URL."""
        validate_object(bucket, key)
        validate_expiry(expires, bucket=bucket, key=key)
        presign = self._client.presigned_get_object
        return await self._call(bucket, key, presign, bucket, key, expires)

    async def presigned_put_url(
        self, bucket: str, key: str, *, expires: timedelta = DEFAULT_PRESIGN_EXPIRY
    ) -> str:
        """A SigV4 presigned URL for an HTTP PUT of the object's bytes."""
        validate_object(bucket, key)
        validate_expiry(expires, bucket=bucket, key=key)
        presign = self._client.presigned_put_object
        return await self._call(bucket, key, presign, bucket, key, expires)

    async def close(self) -> None:
        """Stop the upload threads once the uploads in progress end."""
        await asyncio.to_thread(self._uploads.shutdown)
