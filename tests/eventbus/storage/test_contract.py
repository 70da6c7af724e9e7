"""The Storage contract, run against every backend: local directory and S3.

The S3 backend runs against a real SeaweedFS (no MinIO server can run here). Each test gets a
fresh store (the SeaweedFS one emptied of every bucket).
"""

from __future__ import annotations

import asyncio
import hashlib
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from eventbus.errors import ConflictError, NotFoundError, ValidationFailedError
from eventbus.storage import (
    BucketExistsError,
    BucketNotEmptyError,
    InvalidBucketNameError,
    InvalidKeyError,
    InvalidMetadataError,
    LocalStorage,
    NoSuchBucketError,
    NoSuchKeyError,
    S3Storage,
    SizeMismatchError,
    Storage,
)
from eventbus.storage.errors import InvalidArgumentError, InvalidRangeError

from .helpers import pattern, pattern_md5, read_all, stream

BIG = 20_000_000  # over three 5 MiB parts: four parts on S3


async def test_name_and_source(storage: Storage) -> None:
    assert storage.name in ("local", "s3")
    scheme = "file://" if storage.name == "local" else "http://127.0.0.1:"
    assert storage.source.startswith(scheme)


async def test_bucket_lifecycle(storage: Storage) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    info = await storage.create_bucket("bkt-b")
    await storage.create_bucket("bkt-a")
    assert info.name == "bkt-b"
    assert info.created is not None and info.created >= before
    assert [b.name for b in await storage.list_buckets()] == ["bkt-a", "bkt-b"]
    assert await storage.bucket_exists("bkt-a")
    with pytest.raises(BucketExistsError) as caught:
        await storage.create_bucket("bkt-a")
    assert isinstance(caught.value, ConflictError) and caught.value.code == "conflict"
    await storage.delete_bucket("bkt-a")
    assert not await storage.bucket_exists("bkt-a")
    assert [b.name for b in await storage.list_buckets()] == ["bkt-b"]


async def test_non_empty_bucket_is_not_deleted(storage: Storage, bucket: str) -> None:
    await storage.put(bucket, "deep/down/file", b"x")
    with pytest.raises(BucketNotEmptyError) as caught:
        await storage.delete_bucket(bucket)
    assert caught.value.code == "conflict" and caught.value.bucket == bucket
    assert await storage.delete(bucket, "deep/down/file")
    await storage.delete_bucket(bucket)
    assert not await storage.bucket_exists(bucket)


@pytest.mark.parametrize(
    "name", ["ab", "Upper", "under_score", "-lead", "trail-", "a..b", "a.-b", "10.0.0.1", "x" * 64]
)
async def test_invalid_bucket_names(storage: Storage, name: str) -> None:
    with pytest.raises(InvalidBucketNameError) as caught:
        await storage.create_bucket(name)
    assert caught.value.code == "invalid" and caught.value.reason
    with pytest.raises(InvalidBucketNameError):
        await storage.put(name, "k", b"x")
    assert await storage.list_buckets() == ()


async def test_missing_bucket(storage: Storage) -> None:
    assert not await storage.bucket_exists("no-such-bucket")
    calls = [
        storage.stat("no-such-bucket", "k"),
        storage.get("no-such-bucket", "k"),
        storage.put("no-such-bucket", "k", b"x"),
        storage.list("no-such-bucket"),
        storage.delete("no-such-bucket", "k"),
        storage.delete_bucket("no-such-bucket"),
    ]
    for call in calls:
        with pytest.raises(NoSuchBucketError) as caught:
            await call
        assert isinstance(caught.value, NotFoundError) and caught.value.code == "not_found"
        assert caught.value.bucket == "no-such-bucket"


async def test_missing_key(storage: Storage, bucket: str) -> None:
    for call in (storage.stat(bucket, "nope"), storage.get(bucket, "nope")):
        with pytest.raises(NoSuchKeyError) as caught:
            await call
        assert caught.value.code == "not_found" and caught.value.key == "nope"
    assert await storage.delete(bucket, "nope") is False  # S3: deleting nothing succeeds


async def test_bytes_round_trip_and_stat(storage: Storage, bucket: str) -> None:
    body = b"hello, storage"
    put = await storage.put(
        bucket,
        "greeting.txt",
        body,
        content_type="text/plain; charset=utf-8",
        metadata={"Project": "deepfaas", "run-id": "42"},
    )
    expected_etag = hashlib.md5(body).hexdigest()
    assert (put.bucket, put.key, put.size, put.etag) == (bucket, "greeting.txt", 14, expected_etag)
    assert put.metadata == {"project": "deepfaas", "run-id": "42"}
    assert not put.is_multipart
    info = await storage.stat(bucket, "greeting.txt")
    assert (info.size, info.etag, info.content_type) == (14, expected_etag, put.content_type)
    assert info.metadata == {"project": "deepfaas", "run-id": "42"}
    assert abs(info.last_modified - datetime.now(UTC)) < timedelta(minutes=1)
    got, chunks = await storage.get(bucket, "greeting.txt")
    assert await read_all(chunks) == body
    assert (got.etag, got.size, got.metadata) == (info.etag, 14, info.metadata)


async def test_stream_round_trip_with_uneven_chunks(storage: Storage, bucket: str) -> None:
    parts = [b"a" * 10, b"", b"b" * 70_000, b"c", b"", b"d" * 1_100_000]
    info = await storage.put(bucket, "streamed", stream(parts), content_type="application/x-test")
    body = b"".join(parts)
    assert (info.size, info.etag) == (len(body), hashlib.md5(body).hexdigest())
    _, chunks = await storage.get(bucket, "streamed")
    assert await read_all(chunks) == body
    assert (await storage.stat(bucket, "streamed")).content_type == "application/x-test"


async def test_empty_object(storage: Storage, bucket: str) -> None:
    info = await storage.put(bucket, "empty", stream([]))
    assert (info.size, info.etag) == (0, hashlib.md5(b"").hexdigest())
    _, chunks = await storage.get(bucket, "empty")
    assert await read_all(chunks) == b""
    with pytest.raises(InvalidRangeError):
        await storage.get(bucket, "empty", offset=0, length=1)


async def test_overwrite_replaces_content_and_metadata(storage: Storage, bucket: str) -> None:
    await storage.put(bucket, "k", b"old", metadata={"a": "1"}, content_type="text/plain")
    await storage.put(bucket, "k", b"newer", metadata={"b": "2"})
    info = await storage.stat(bucket, "k")
    assert (info.size, info.metadata, info.content_type) == (
        5,
        {"b": "2"},
        "application/octet-stream",
    )
    _, chunks = await storage.get(bucket, "k")
    assert await read_all(chunks) == b"newer"


async def test_large_streamed_put_and_get(storage: Storage, bucket: str) -> None:
    # moto keeps uploads in this process, so only the local backend's memory is measurable
    measure = storage.name == "local"
    if measure:
        tracemalloc.start()
    try:
        info = await storage.put(bucket, "big.bin", stream(pattern(BIG)))
        put_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        got, chunks = await storage.get(bucket, "big.bin")
        digest, count = hashlib.md5(), 0
        async for chunk in chunks:
            digest.update(chunk)
            count += 1
        get_peak = tracemalloc.get_traced_memory()[1]
    finally:
        if measure:
            tracemalloc.stop()
    assert info.size == got.size == BIG
    assert digest.hexdigest() == pattern_md5(BIG)
    assert count > 1  # streamed in chunks, not one blob
    if storage.name == "s3":
        assert info.is_multipart and info.etag.endswith("-4") and got.etag == info.etag
    else:
        assert info.etag == got.etag == pattern_md5(BIG)
        assert put_peak < 8 * 2**20 and get_peak < 8 * 2**20, (put_peak, get_peak)


async def test_ranges(storage: Storage, bucket: str) -> None:
    await storage.put(bucket, "digits", b"0123456789")
    for offset, length, expected in [(0, 3, b"012"), (4, None, b"456789"), (8, 100, b"89")]:
        info, chunks = await storage.get(bucket, "digits", offset=offset, length=length)
        assert await read_all(chunks) == expected
        assert info.size == 10
    with pytest.raises(InvalidRangeError):
        await storage.get(bucket, "digits", offset=10)
    with pytest.raises(InvalidArgumentError):
        await storage.get(bucket, "digits", offset=-1)


async def test_unconsumed_get_can_be_closed(storage: Storage, bucket: str) -> None:
    await storage.put(bucket, "k", b"x" * 3_000_000)
    _, chunks = await storage.get(bucket, "k")
    assert len(await anext(chunks)) > 0
    await chunks.aclose()
    await chunks.aclose()
    assert await storage.delete(bucket, "k")


KEYS = [
    "a-c",
    "a/b",
    "a/c/d",
    "a0",
    "b/x",
    "photos/2024/1.jpg",
    "photos/2024/2.jpg",
    "photos/2025/1.jpg",
    "photos/readme",
    "z",
]


async def _fill(storage: Storage, bucket: str) -> None:
    await asyncio.gather(*(storage.put(bucket, key, key.encode()) for key in KEYS))


async def test_list_prefix_and_delimiter(storage: Storage, bucket: str) -> None:
    await _fill(storage, bucket)
    everything = await storage.list(bucket)
    assert [o.key for o in everything.objects] == KEYS and everything.prefixes == ()
    assert not everything.is_truncated and everything.next_marker is None
    first = everything.objects[0]
    assert (first.bucket, first.size, first.etag) == (bucket, 3, hashlib.md5(b"a-c").hexdigest())
    photos = await storage.list(bucket, prefix="photos/")
    assert [o.key for o in photos.objects] == KEYS[5:9]
    top = await storage.list(bucket, delimiter="/")
    assert [o.key for o in top.objects] == ["a-c", "a0", "z"]
    assert top.prefixes == ("a/", "b/", "photos/")
    nested = await storage.list(bucket, prefix="photos/", delimiter="/")
    assert [o.key for o in nested.objects] == ["photos/readme"]
    assert nested.prefixes == ("photos/2024/", "photos/2025/")
    dotted = await storage.list(bucket, prefix="photos/2024/", delimiter=".")
    assert dotted.objects == () and dotted.prefixes == ("photos/2024/1.", "photos/2024/2.")
    after = await storage.list(bucket, start_after="a0")
    assert [o.key for o in after.objects] == KEYS[4:]
    assert (await storage.list(bucket, prefix="nothing/")).objects == ()


@pytest.mark.parametrize("delimiter", [None, "/"])
async def test_list_pagination(storage: Storage, bucket: str, delimiter: str | None) -> None:
    await _fill(storage, bucket)
    full = await storage.list(bucket, delimiter=delimiter)
    expected = sorted([o.key for o in full.objects] + list(full.prefixes))
    seen: list[str] = []
    marker = None
    for _ in range(20):
        page = await storage.list(bucket, delimiter=delimiter, start_after=marker, limit=2)
        entries = sorted([o.key for o in page.objects] + list(page.prefixes))
        assert 0 < len(entries) <= 2
        seen += entries
        if not page.is_truncated:
            assert page.next_marker is None
            break
        assert page.next_marker == max(entries)
        marker = page.next_marker
    assert sorted(seen) == seen == expected


async def test_bad_list_arguments(storage: Storage, bucket: str) -> None:
    bad: list[dict[str, object]] = [
        {"limit": 0},
        {"limit": 1001},
        {"delimiter": ""},
        {"prefix": "a\x00"},
        {"start_after": "a\x00"},
    ]
    for kwargs in bad:
        with pytest.raises(InvalidArgumentError):
            await storage.list(bucket, **kwargs)  # type: ignore[arg-type]


async def test_delete(storage: Storage, bucket: str) -> None:
    await storage.put(bucket, "dir/sub/k", b"x")
    await storage.put(bucket, "dir/other", b"y")
    assert await storage.delete(bucket, "dir/sub/k") is True
    with pytest.raises(NoSuchKeyError):
        await storage.stat(bucket, "dir/sub/k")
    assert await storage.delete(bucket, "dir/sub/k") is False
    listing = await storage.list(bucket, delimiter="/")
    assert listing.prefixes == ("dir/",)
    assert [o.key for o in (await storage.list(bucket)).objects] == ["dir/other"]


INVALID_KEYS = [
    "../x",
    "a/../../b",
    "/abs",
    "a\x00b",
    "é" * 512 + "a",  # 1025 bytes of UTF-8
    "",
    "   ",
    "a//b",
    "folder/",
    "./a",
    "a/./b",
    "..\\..\\etc\\passwd",
    "a\\b",
    "tab\there",
    "new\nline",
    "del\x7f",
    "c1\x85",
    "lone\ud800surrogate",
    "x" * 256 + "/y",
]


@pytest.mark.parametrize("key", INVALID_KEYS, ids=range(len(INVALID_KEYS)))
async def test_invalid_keys_are_refused(storage: Storage, bucket: str, key: str) -> None:
    with pytest.raises(InvalidKeyError) as caught:
        await storage.put(bucket, key, b"x")
    error = caught.value
    assert isinstance(error, ValidationFailedError) and error.code == "invalid"
    assert error.key == key and error.bucket == bucket and error.reason
    with pytest.raises(InvalidKeyError):
        await storage.put(bucket, key, stream([b"x"]))
    for call in (storage.stat(bucket, key), storage.get(bucket, key), storage.delete(bucket, key)):
        with pytest.raises(InvalidKeyError):
            await call
    assert (await storage.list(bucket)).objects == ()


async def test_longest_key_is_accepted(storage: Storage, bucket: str) -> None:
    key = "/".join(["é" * 127] * 4) + "/abcd"  # four 254-byte segments: 1024 bytes in all
    assert len(key.encode()) == 1024
    await storage.put(bucket, key, b"x")
    assert [o.key for o in (await storage.list(bucket)).objects] == [key]


SPECIAL_KEYS = [
    "with space.txt",
    "dir one/sub dir/file name.bin",
    "ünïcødé/日本語.txt",
    "a+b%20c&d=e?f#g",
    "emoji 😀/x",
    "semi;colon,comma'quote\"",
    "tilde~/~x",
]


async def test_special_keys_round_trip(storage: Storage, bucket: str) -> None:
    for index, key in enumerate(SPECIAL_KEYS):
        await storage.put(bucket, key, f"body {index}".encode(), metadata={"index": str(index)})
    listing = await storage.list(bucket)
    assert [o.key for o in listing.objects] == sorted(SPECIAL_KEYS)
    for index, key in enumerate(SPECIAL_KEYS):
        info, chunks = await storage.get(bucket, key)
        assert info.key == key and info.metadata == {"index": str(index)}
        assert await read_all(chunks) == f"body {index}".encode()
    top = await storage.list(bucket, delimiter="/")
    assert top.prefixes == ("dir one/", "emoji 😀/", "tilde~/", "ünïcødé/")
    for key in SPECIAL_KEYS:
        assert await storage.delete(bucket, key)
    assert (await storage.list(bucket)).objects == ()


@pytest.mark.parametrize("declared", [0, 4, 6])
async def test_size_mismatch_stores_nothing(storage: Storage, bucket: str, declared: int) -> None:
    with pytest.raises(SizeMismatchError) as caught:
        await storage.put(bucket, "k", stream([b"abc", b"de"]), size=declared)
    assert caught.value.code == "invalid"
    with pytest.raises(SizeMismatchError):
        await storage.put(bucket, "k", b"abcde", size=declared)
    with pytest.raises(NoSuchKeyError):
        await storage.stat(bucket, "k")
    info = await storage.put(bucket, "k", stream([b"abc", b"de"]), size=5)
    assert info.size == 5


@pytest.mark.parametrize(
    "metadata",
    [
        {"bad name": "x"},
        {"ok": "non-ascii é"},
        {"ok": " padded"},
        {"A": "1", "a": "2"},
        {"k": "v" * 2100},
    ],
)
async def test_invalid_metadata(storage: Storage, bucket: str, metadata: dict[str, str]) -> None:
    with pytest.raises(InvalidMetadataError):
        await storage.put(bucket, "k", b"x", metadata=metadata)
    assert (await storage.list(bucket)).objects == ()


async def test_cancelled_put_stores_nothing(storage: Storage, bucket: str) -> None:
    started = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        started.set()
        await asyncio.Event().wait()  # the client never sends the rest
        yield b"never"

    upload = asyncio.create_task(storage.put(bucket, "k", stalled()))
    await asyncio.wait_for(started.wait(), 5)
    upload.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upload
    await asyncio.sleep(0.5)  # the upload thread gives up within a 0.2 s poll
    with pytest.raises(NoSuchKeyError):
        await storage.stat(bucket, "k")
    assert (await storage.list(bucket)).objects == ()


async def test_concurrent_puts_of_one_key_leave_one_whole_object(
    storage: Storage, bucket: str
) -> None:
    bodies = [bytes([index]) * 300_000 for index in range(6)]
    await asyncio.gather(*(storage.put(bucket, "same", stream([body])) for body in bodies))
    info, chunks = await storage.get(bucket, "same")
    assert await read_all(chunks) in bodies
    assert info.etag in {hashlib.md5(body).hexdigest() for body in bodies}


def test_backends_satisfy_the_protocol() -> None:
    backends: list[type[Storage]] = [LocalStorage, S3Storage]  # checked by mypy, structurally
    assert [backend.__name__ for backend in backends] == ["LocalStorage", "S3Storage"]
