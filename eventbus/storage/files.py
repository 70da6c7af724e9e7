"""File helpers of the local backend: atomic JSON files, sidecar records, MD5, fsync."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from eventbus.storage.types import CHUNK_SIZE, DEFAULT_CONTENT_TYPE, ObjectInfo

logger = logging.getLogger(__name__)

_CREATE: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
_FORMAT: Final = 1


def temp_name(directory: str, base: str = "") -> str:
    """A fresh temporary file name in ``directory`` (same file system, for ``os.replace``)."""
    return os.path.join(directory, f"{base}.deepfaas-{secrets.token_hex(16)}.tmp")


def create_exclusive(path: str) -> int:
    """Open a new file for writing; fails if anything (even a dangling link) is there."""
    return os.open(path, _CREATE, 0o644)


def fsync_dir(directory: str) -> None:
    """Make a rename in ``directory`` durable (best effort where directories cannot sync)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Have the kernel start writing a range of ``fd`` to disk, without waiting for it.

    Linux starts writeback of a range's dirty pages on ``POSIX_FADV_DONTNEED`` (and drops
    them from the page cache once clean); elsewhere this does nothing.
    """
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        with contextlib.suppress(OSError):
            advise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def _write_temp(directory: str, value: dict[str, Any]) -> str:
    temp = temp_name(directory)
    fd = create_exclusive(temp)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(orjson.dumps(value))
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return temp


def write_json_atomic(path: str, value: dict[str, Any]) -> None:
    """Replace ``path`` with ``value`` as JSON: readers see the old file or the new, whole."""
    directory = os.path.dirname(path)
    temp = _write_temp(directory, value)
    try:
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    fsync_dir(directory)


def create_json(path: str, value: dict[str, Any]) -> bool:
    """Write ``value`` to ``path`` only if no file is there yet; False if one was."""
    temp = _write_temp(os.path.dirname(path), value)
    try:
        os.link(temp, path)
    except FileExistsError:
        return False
    finally:
        os.unlink(temp)
    return True


def read_json(path: str) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None if it is missing or unreadable."""
    try:
        with open(path, "rb") as source:
            value = orjson.loads(source.read())
    except (OSError, orjson.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def md5_hex(fd: int) -> str:
    """MD5 (hex) of a whole open file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    offset = 0
    while chunk := os.pread(fd, CHUNK_SIZE, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def mtime(st: os.stat_result) -> datetime:
    """A file's modification time as an aware UTC datetime."""
    return datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC)


def sidecar_record(
    key: str, st: os.stat_result, etag: str, content_type: str, metadata: dict[str, str]
) -> dict[str, Any]:
    """The sidecar JSON of an object, tied to its data file by inode, size and mtime."""
    return {
        "format": _FORMAT,
        "key": key,
        "etag": etag,
        "content_type": content_type,
        "metadata": metadata,
        "size": st.st_size,
        "ino": st.st_ino,
        "mtime_ns": st.st_mtime_ns,
    }


def sidecar_matches(record: dict[str, Any] | None, key: str, st: os.stat_result) -> bool:
    """Whether a sidecar describes exactly this data file (not an older or newer one)."""
    return (
        record is not None
        and record.get("format") == _FORMAT
        and record.get("key") == key
        and record.get("size") == st.st_size
        and record.get("ino") == st.st_ino
        and record.get("mtime_ns") == st.st_mtime_ns
        and isinstance(record.get("etag"), str)
        and isinstance(record.get("content_type"), str)
        and isinstance(record.get("metadata"), dict)
    )


def describe(bucket: str, key: str, fd: int, st: os.stat_result, sidecar: str) -> ObjectInfo:
    """An object's info from its sidecar; a missing or stale one means hashing the file."""
    record = read_json(sidecar)
    if record is not None and sidecar_matches(record, key, st):
        ctype, meta = record["content_type"], record["metadata"]
        return ObjectInfo(bucket, key, st.st_size, record["etag"], ctype, mtime(st), meta)
    etag = md5_hex(fd)
    if record is None:  # a file put there by hand: remember its ETag (unless a write raced us)
        logger.info("object %s/%s has no metadata; recording its ETag", bucket, key)
        with contextlib.suppress(OSError):
            os.makedirs(os.path.dirname(sidecar), exist_ok=True)
            create_json(sidecar, sidecar_record(key, st, etag, DEFAULT_CONTENT_TYPE, {}))
    else:
        logger.warning("metadata of %s/%s is stale (an interrupted write?)", bucket, key)
    return ObjectInfo(bucket, key, st.st_size, etag, DEFAULT_CONTENT_TYPE, mtime(st))
