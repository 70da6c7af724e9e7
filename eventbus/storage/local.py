"""The local directory backend, the embedded default: ``<root>/<bucket>/<key>`` on disk.

Blocking file work (``tree.LocalTree``) runs in threads: short calls in the default executor,
uploads in this store's own (see ``bridge.run_upload``). Presigned URLs are unsupported.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from eventbus.storage.bridge import ChunkReader, ChunkStream, run_upload
from eventbus.storage.errors import UnsupportedOperationError
from eventbus.storage.keys import (
    normalize_metadata,
    validate_bucket_name,
    validate_content_type,
    validate_list_args,
    validate_object,
    validate_range,
    validate_size,
)
from eventbus.storage.tree import META_DIR, LocalTree
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


class LocalStorage:
    """Storage in a directory tree, no server needed; safe for several processes to share."""

    def __init__(self, root: str | os.PathLike[str], *, max_uploads: int = 8) -> None:
        os.makedirs(os.path.join(root, META_DIR), exist_ok=True)
        self._tree = LocalTree(os.path.realpath(root))
        self._uploads = ThreadPoolExecutor(max_uploads, thread_name_prefix="storage-local")

    @property
    def name(self) -> str:
        """Always ``"local"``."""
        return "local"

    @property
    def source(self) -> str:
        """The root directory as a ``file://`` URI."""
        return Path(self._tree.root).as_uri()

    @property
    def root(self) -> str:
        """The real path of the root directory."""
        return self._tree.root

    async def create_bucket(self, bucket: str) -> BucketInfo:
        """Create ``<root>/<bucket>``; BucketExistsError if it exists."""
        validate_bucket_name(bucket)
        return await asyncio.to_thread(self._tree.create_bucket, bucket)

    async def list_buckets(self) -> tuple[BucketInfo, ...]:
        """All bucket folders under the root, sorted by name."""
        return await asyncio.to_thread(self._tree.list_buckets)

    async def bucket_exists(self, bucket: str) -> bool:
        """Whether ``<root>/<bucket>`` is a folder."""
        validate_bucket_name(bucket)
        return await asyncio.to_thread(self._tree.is_bucket, bucket)

    async def delete_bucket(self, bucket: str) -> None:
        """Delete an empty bucket and its metadata; BucketNotEmptyError otherwise."""
        validate_bucket_name(bucket)
        await asyncio.to_thread(self._tree.delete_bucket, bucket)

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
        """Stream the body into a temporary file (MD5 on the way), then rename it in place."""
        validate_object(bucket, key)
        content_type = validate_content_type(content_type, bucket=bucket, key=key)
        meta = normalize_metadata(metadata, bucket=bucket, key=key)
        validate_size(size, bucket=bucket, key=key)
        reader = ChunkReader(data, asyncio.get_running_loop(), size=size, bucket=bucket, key=key)
        return await run_upload(
            self._uploads, reader, lambda: self._tree.put(bucket, key, reader, content_type, meta)
        )

    async def get(
        self, bucket: str, key: str, *, offset: int = 0, length: int | None = None
    ) -> tuple[ObjectInfo, ByteStream]:
        """Open the file now (a later overwrite does not disturb this read) and stream it."""
        validate_object(bucket, key)
        validate_range(offset, length, bucket=bucket, key=key)
        opened = await asyncio.to_thread(self._tree.open_object, bucket, key, offset, length)
        info, fd, position, end = opened

        def read() -> bytes:
            nonlocal position
            if position >= end:
                return b""
            chunk = os.pread(fd, min(CHUNK_SIZE, end - position), position)
            position += len(chunk)
            return chunk

        return info, ChunkStream(read, lambda: os.close(fd))

    async def stat(self, bucket: str, key: str) -> ObjectInfo:
        """The object's info from its file and sidecar."""
        validate_object(bucket, key)
        return await asyncio.to_thread(self._tree.stat_object, bucket, key)

    async def list(
        self,
        bucket: str,
        prefix: str = "",
        delimiter: str | None = None,
        start_after: str | None = None,
        limit: int = MAX_LIST_LIMIT,
    ) -> ListResult:
        """Walk the bucket's tree in key order, reading only the folders the page needs."""
        validate_bucket_name(bucket)
        validate_list_args(prefix, delimiter, start_after, limit, bucket=bucket)
        return await asyncio.to_thread(
            self._tree.list_page, bucket, prefix, delimiter, start_after, limit
        )

    async def delete(self, bucket: str, key: str) -> bool:
        """Remove the file and its sidecar, then any folders left empty; False if missing."""
        validate_object(bucket, key)
        return await asyncio.to_thread(self._tree.delete, bucket, key)

    async def presigned_get_url(
        self, bucket: str, key: str, *, expires: timedelta = DEFAULT_PRESIGN_EXPIRY
    ) -> str:
        """Unsupported: raises UnsupportedOperationError (no server to present a URL to)."""
        raise _no_presign(bucket, key)

    async def presigned_put_url(
        self, bucket: str, key: str, *, expires: timedelta = DEFAULT_PRESIGN_EXPIRY
    ) -> str:
        """Unsupported: raises UnsupportedOperationError (no server to present a URL to)."""
        raise _no_presign(bucket, key)

    async def close(self) -> None:
        """Stop the upload threads once the uploads in progress end."""
        await asyncio.to_thread(self._uploads.shutdown)


def _no_presign(bucket: str, key: str) -> UnsupportedOperationError:
    return UnsupportedOperationError(
        "the local storage backend has no presigned URLs; serve the object through the gateway",
        bucket=bucket,
        key=key,
        reason="presigned URLs need an S3 backend",
    )
