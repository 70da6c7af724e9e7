"""The blocking file work of the local backend; ``LocalStorage`` runs it in threads.

Layout: ``<root>/<bucket>/<key>`` holds the bytes; ``<root>/.meta/<bucket>/`` holds
``bucket.json`` and one sidecar per object, named by a hash of the key so no key can clash
with one (bucket names cannot start with a dot). A write goes to a temporary file in the
target's folder, is fsynced and renamed over the target; its sidecar follows the same way and
is tied to the data file by inode, size and mtime, so a stale one is detected, never trusted.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

from eventbus.storage import files
from eventbus.storage.bridge import ChunkReader
from eventbus.storage.errors import (
    BucketExistsError,
    BucketNotEmptyError,
    InvalidKeyError,
    InvalidRangeError,
    KeyConflictError,
    NoSuchBucketError,
    NoSuchKeyError,
    StorageError,
)
from eventbus.storage.keys import is_valid_bucket_name, is_valid_key
from eventbus.storage.listing import paginate, walk_tree
from eventbus.storage.types import (
    BucketInfo,
    ListResult,
    ObjectInfo,
    ObjectSummary,
)

logger = logging.getLogger(__name__)

META_DIR: Final = ".meta"
_BUCKET_FILE: Final = "bucket.json"
_TEMP: Final = re.compile(r"\.deepfaas-[0-9a-f]{32}\.tmp")
_OPEN: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
#: an upload's written bytes are sent on to the disk every this many bytes
WRITEBACK_BYTES: Final = 32 * 1024 * 1024


class LocalTree:
    """Buckets and objects in a directory tree, with blocking calls only."""

    def __init__(self, root: str) -> None:
        self.root = root

    # --- paths -------------------------------------------------------------------------

    def bucket_dir(self, bucket: str) -> str:
        """The bucket's folder; NoSuchBucketError if it is missing."""
        if not self.is_bucket(bucket):
            raise NoSuchBucketError(f"bucket {bucket!r} does not exist", bucket=bucket)
        return os.path.join(self.root, bucket)

    def is_bucket(self, bucket: str) -> bool:
        """Whether the bucket's folder exists (a real folder, not a link)."""
        path = os.path.join(self.root, bucket)
        return os.path.isdir(path) and not os.path.islink(path)

    def object_path(self, bucket: str, key: str) -> str:
        """The file of a key; refuses one whose real folder lies outside the bucket."""
        bucket_dir = os.path.join(self.root, bucket)
        path = os.path.join(bucket_dir, *key.split("/"))
        real_parent = os.path.realpath(os.path.dirname(path))
        if real_parent != bucket_dir and not real_parent.startswith(bucket_dir + os.sep):
            reason = "resolves outside its bucket"
            raise InvalidKeyError(f"key {key!r} {reason}", bucket=bucket, key=key, reason=reason)
        return path

    def sidecar_path(self, bucket: str, key: str) -> str:
        """Where the key's metadata lives."""
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        return os.path.join(self.root, META_DIR, bucket, digest[:2], digest + ".json")

    def _hidden(self, bucket: str, key: str) -> bool:
        """Whether a file is one of our in-flight temporary files rather than an object."""
        name = key.rpartition("/")[2]
        return bool(_TEMP.fullmatch(name)) and not os.path.exists(self.sidecar_path(bucket, key))

    # --- buckets -----------------------------------------------------------------------

    def create_bucket(self, bucket: str) -> BucketInfo:
        """Make the bucket's folder and record when."""
        try:
            os.mkdir(os.path.join(self.root, bucket))
        except FileExistsError:
            raise BucketExistsError(f"bucket {bucket!r} exists", bucket=bucket) from None
        created = datetime.now(UTC)
        meta_dir = os.path.join(self.root, META_DIR, bucket)
        os.makedirs(meta_dir, exist_ok=True)
        record = {"created": created.isoformat()}
        files.write_json_atomic(os.path.join(meta_dir, _BUCKET_FILE), record)
        return BucketInfo(bucket, created)

    def list_buckets(self) -> tuple[BucketInfo, ...]:
        """Every bucket folder, sorted by name."""
        found = []
        with os.scandir(self.root) as entries:
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False) or not is_valid_bucket_name(entry.name):
                    continue  # .meta, stray files, folders no bucket API could name
                record = files.read_json(
                    os.path.join(self.root, META_DIR, entry.name, _BUCKET_FILE)
                )
                created = None
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    created = datetime.fromisoformat(record["created"]) if record else None
                found.append(BucketInfo(entry.name, created))
        return tuple(sorted(found, key=lambda info: info.name))

    def delete_bucket(self, bucket: str) -> None:
        """Remove an empty bucket's folder and metadata."""
        bucket_dir = self.bucket_dir(bucket)
        accept = self._accept(bucket)
        if next(walk_tree(bucket_dir, prefix="", start_after=None, skip=[], accept=accept), None):
            raise BucketNotEmptyError(f"bucket {bucket!r} is not empty", bucket=bucket)
        shutil.rmtree(bucket_dir)
        shutil.rmtree(os.path.join(self.root, META_DIR, bucket), ignore_errors=True)

    # --- writing -----------------------------------------------------------------------

    def _make_parents(self, bucket: str, key: str) -> None:
        current = os.path.join(self.root, bucket)
        for segment in key.split("/")[:-1]:
            current = os.path.join(current, segment)
            try:
                os.mkdir(current)
            except FileExistsError:
                if os.path.islink(current) or not os.path.isdir(current):
                    raise self._conflict(bucket, key, current) from None
            except FileNotFoundError:
                raise NoSuchBucketError(f"bucket {bucket!r} was deleted", bucket=bucket) from None

    def _conflict(self, bucket: str, key: str, path: str) -> KeyConflictError:
        other = os.path.relpath(path, os.path.join(self.root, bucket)).replace(os.sep, "/")
        return KeyConflictError(
            f"key {key!r} clashes with {other!r}: a local store cannot hold both a key and "
            "keys under it as a folder",
            bucket=bucket,
            key=key,
            reason="key clashes with a folder or file of another key",
        )

    def _open_temp(self, bucket: str, key: str, parent: str) -> tuple[int, str]:
        for _ in range(3):  # a concurrent delete may remove a folder we just made
            self._make_parents(bucket, key)
            temp = files.temp_name(parent)
            with contextlib.suppress(FileNotFoundError):
                return files.create_exclusive(temp), temp
        raise StorageError("could not create a temporary file", bucket=bucket, key=key)

    def put(
        self, bucket: str, key: str, reader: ChunkReader, content_type: str, meta: dict[str, str]
    ) -> ObjectInfo:
        """Copy the reader into a temporary file, hashing it, and rename it over the key."""
        self.bucket_dir(bucket)
        path = self.object_path(bucket, key)
        if os.path.isdir(path):
            raise self._conflict(bucket, key, path)
        parent = os.path.dirname(path)
        fd, temp = self._open_temp(bucket, key, parent)
        digest = hashlib.md5(usedforsecurity=False)
        sidecar = self.sidecar_path(bucket, key)
        try:
            with os.fdopen(fd, "wb") as out:
                written = synced = 0
                while chunk := reader.read_block():
                    digest.update(chunk)
                    out.write(chunk)  # a block is larger than the buffer: written through
                    written += len(chunk)
                    if written - synced >= WRITEBACK_BYTES:
                        # to disk while the rest arrives: the fsync below finds little left
                        out.flush()
                        files.start_writeback(out.fileno(), synced, written - synced)
                        synced = written
                out.flush()
                os.fsync(out.fileno())
                st = os.fstat(out.fileno())
            etag = digest.hexdigest()
            # The sidecar goes first: it names the new file's inode, which the rename keeps, so
            # a reader never finds the new object without its content type and metadata.
            os.makedirs(os.path.dirname(sidecar), exist_ok=True)
            files.write_json_atomic(
                sidecar, files.sidecar_record(key, st, etag, content_type, meta)
            )
            os.replace(temp, path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            if isinstance(exc, IsADirectoryError):
                raise self._conflict(bucket, key, path) from exc
            raise
        files.fsync_dir(parent)
        return ObjectInfo(bucket, key, st.st_size, etag, content_type, files.mtime(st), meta)

    def delete(self, bucket: str, key: str) -> bool:
        """Remove the file, its sidecar and the folders it leaves empty; False if missing."""
        bucket_dir = self.bucket_dir(bucket)
        path = self.object_path(bucket, key)
        existed = False
        if not self._hidden(bucket, key):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                if stat.S_ISREG(os.lstat(path).st_mode):
                    os.unlink(path)
                    existed = True
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.sidecar_path(bucket, key))
        directory = os.path.dirname(path)
        while existed and directory != bucket_dir:
            try:
                os.rmdir(directory)
            except OSError:
                break  # not empty (or just reused by a concurrent write)
            directory = os.path.dirname(directory)
        return existed

    # --- reading -----------------------------------------------------------------------

    def _open_file(self, bucket: str, key: str) -> tuple[int, os.stat_result]:
        self.bucket_dir(bucket)
        path = self.object_path(bucket, key)
        missing = NoSuchKeyError(f"no object {key!r} in bucket {bucket!r}", bucket=bucket, key=key)
        if self._hidden(bucket, key):
            raise missing
        try:
            fd = os.open(path, _OPEN)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EISDIR):
                raise missing from None
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise missing
        return fd, st

    def stat_object(self, bucket: str, key: str) -> ObjectInfo:
        """The object's info."""
        fd, st = self._open_file(bucket, key)
        try:
            return files.describe(bucket, key, fd, st, self.sidecar_path(bucket, key))
        finally:
            os.close(fd)

    def open_object(
        self, bucket: str, key: str, offset: int, length: int | None
    ) -> tuple[ObjectInfo, int, int, int]:
        """Info, an open descriptor (the caller closes it) and the byte span to read."""
        fd, st = self._open_file(bucket, key)
        try:
            info = files.describe(bucket, key, fd, st, self.sidecar_path(bucket, key))
            if offset == 0 and length is None:
                return info, fd, 0, st.st_size
            if offset >= st.st_size:
                raise InvalidRangeError(
                    f"offset {offset} is past the end of a {st.st_size}-byte object",
                    bucket=bucket,
                    key=key,
                    reason="range not satisfiable",
                )
            end = st.st_size if length is None else min(st.st_size, offset + length)
            return info, fd, offset, end
        except BaseException:
            os.close(fd)
            raise

    def _accept(self, bucket: str) -> Callable[[str], bool]:
        return lambda key: is_valid_key(key) and not self._hidden(bucket, key)

    def list_page(
        self, bucket: str, prefix: str, delimiter: str | None, start_after: str | None, limit: int
    ) -> ListResult:
        """One page of the bucket's keys and common prefixes."""
        bucket_dir = self.bucket_dir(bucket)
        skip: list[str] = []

        def skip_under(common_prefix: str) -> None:
            skip[:] = [common_prefix]

        walk = walk_tree(
            bucket_dir,
            prefix=prefix,
            start_after=start_after,
            skip=skip,
            accept=self._accept(bucket),
        )
        page = paginate(
            ((key, key) for key in walk),
            prefix=prefix,
            delimiter=delimiter,
            start_after=start_after,
            limit=limit,
            on_prefix=skip_under,
        )
        summaries = []
        for key in page.objects:
            with contextlib.suppress(NoSuchKeyError):  # deleted since the walk saw it
                info = self.stat_object(bucket, key)
                summaries.append(
                    ObjectSummary(bucket, key, info.size, info.etag, info.last_modified)
                )
        return ListResult(
            tuple(summaries), tuple(page.prefixes), page.is_truncated, page.next_marker
        )
