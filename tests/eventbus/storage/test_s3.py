"""What only the S3 backend does: presigned URLs, error translation, listing order.

They run on the session's SeaweedFS, a real S3 server (no MinIO server can run here).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import urllib3
from minio.datatypes import Object
from minio.error import S3Error, ServerError

from eventbus.storage import (
    BucketNotEmptyError,
    InvalidArgumentError,
    NoSuchKeyError,
    S3Storage,
    StorageError,
    StorageUnavailableError,
)
from eventbus.storage.s3_responses import in_key_order, translate_error
from eventbus.storage.seaweedfs import EmbeddedSeaweed

from .helpers import read_all


async def test_presigned_get_and_put(s3: S3Storage) -> None:
    await s3.create_bucket("bkt")
    await s3.put("bkt", "dir/a file.txt", b"downloadable")
    get_url = await s3.presigned_get_url("bkt", "dir/a file.txt", expires=timedelta(minutes=5))
    put_url = await s3.presigned_put_url("bkt", "up/loaded.bin")
    async with httpx.AsyncClient() as client:
        got = await client.get(get_url)
        assert got.status_code == 200 and got.content == b"downloadable"
        # moto (an emulator) stored an empty body unless the content type was given
        headers = {"Content-Type": "application/octet-stream"}
        put = await client.put(put_url, content=b"uploaded", headers=headers)
        assert put.status_code == 200
    _, chunks = await s3.get("bkt", "up/loaded.bin")
    assert await read_all(chunks) == b"uploaded"
    with pytest.raises(InvalidArgumentError):
        await s3.presigned_get_url("bkt", "k", expires=timedelta(days=8))


async def test_unreachable_endpoint_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once the probe is closed
    store = S3Storage(
        f"127.0.0.1:{port}",
        access_key="k",
        secret_key="s",
        secure=False,
        region="us-east-1",
        http_client=urllib3.PoolManager(retries=False),
    )
    try:
        with pytest.raises(StorageUnavailableError) as caught:
            await store.list_buckets()
        assert caught.value.code == "unavailable"
        with pytest.raises(StorageUnavailableError):
            await store.put("bkt", "k", b"x")
    finally:
        await store.close()


def test_bad_construction() -> None:
    with pytest.raises(InvalidArgumentError):
        S3Storage("127.0.0.1:9000", part_size=1024)
    with pytest.raises(InvalidArgumentError):
        S3Storage("http://127.0.0.1:9000/path")


def s3_error(code: str, status: int = 400) -> S3Error:
    response = urllib3.HTTPResponse(status=status)
    return S3Error(response, code, "message", "/bkt/k", "req", "host")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (s3_error("NoSuchKey", 404), NoSuchKeyError),
        (s3_error("BucketNotEmpty", 409), BucketNotEmptyError),
        (s3_error("SlowDown", 503), StorageUnavailableError),
        (s3_error("SomethingNew", 503), StorageUnavailableError),
        (s3_error("AccessDenied", 403), StorageError),
        (ServerError("bad gateway", 502), StorageUnavailableError),
        (urllib3.exceptions.MaxRetryError(None, "/", None), StorageUnavailableError),  # type: ignore[arg-type]
        (ConnectionRefusedError(), StorageUnavailableError),
    ],
)
def test_error_translation(error: Exception, expected: type[StorageError]) -> None:
    translated = translate_error(error, "bkt", "k")
    assert type(translated) is expected
    assert (translated.bucket, translated.key) == ("bkt", "k")


def obj(name: str) -> Object:
    return Object("bkt", name, etag="e", size=1)


def prefix(name: str) -> Object:
    return Object("bkt", name)  # how the SDK hands over a common prefix


def test_pages_are_merged_into_key_order() -> None:
    pages = [obj("a"), obj("c"), obj("e"), prefix("b/"), prefix("d/")]
    pages += [obj("f"), obj("h"), prefix("g/")]
    merged = [(name, item is not None) for name, item in in_key_order(pages)]
    assert merged == [
        ("a", True),
        ("b/", False),
        ("c", True),
        ("d/", False),
        ("e", True),
        ("f", True),
        ("g/", False),
        ("h", True),
    ]


def test_merging_never_buffers_more_than_a_page() -> None:
    consumed = 0

    def endless() -> Iterator[Object]:
        nonlocal consumed
        while True:
            consumed += 1
            yield obj(f"key{consumed:08d}")

    first = next(iter(in_key_order(endless())))
    assert first[0] == "key00000001" and consumed == 1001


async def test_the_embedded_seaweedfs_takes_a_hundred_buckets(
    s3: S3Storage, seaweed: EmbeddedSeaweed
) -> None:
    """Each new bucket starts with one volume: with weed's default (seven a bucket, at most
    free disk / 1 GiB in all) writes to new buckets failed with 500 after a few dozen."""
    names = [f"many-{i:03d}" for i in range(120)]
    for name in names:
        await s3.create_bucket(name)
        await s3.put(name, "k", b"x")
    for name in names[::17]:
        _, chunks = await s3.get(name, "k")
        assert await read_all(chunks) == b"x"
    volumes = [p.name.rpartition("_")[0] for p in seaweed.data_dir.glob("many-*.dat")]
    assert sorted(volumes) == names


async def test_what_weed_acknowledged_survives_its_sigkill(tmp_path: Path) -> None:
    """The platform stops its `weed` with SIGKILL after a short grace (its polite stop waits
    15 s on its own streams), so everything weed answered 200 to must be read back after a
    SIGKILL right after the answer: small objects, a multipart one, a delete and a new bucket."""
    own = EmbeddedSeaweed(tmp_path / "weed")

    def storage() -> S3Storage:
        return S3Storage(
            own.s3_endpoint,
            access_key=own.access_key,
            secret_key=own.secret_key,
            secure=False,
            part_size=5 * 1024 * 1024,
        )

    big = bytes(range(256)) * (48 * 1024)  # 12 MiB: three parts
    own.start()
    try:
        store = storage()
        await store.create_bucket("kept")
        for i in range(20):
            await store.put("kept", f"small/{i}", f"value {i}".encode())
        await store.put("kept", "big", big)
        await store.delete("kept", "small/0")
        await store.close()
        own.stop(kill=True)
        own.start()
        store = storage()
        _, chunks = await store.get("kept", "big")
        assert await read_all(chunks) == big
        for i in range(1, 20):
            _, chunks = await store.get("kept", f"small/{i}")
            assert await read_all(chunks) == f"value {i}".encode()
        with pytest.raises(NoSuchKeyError):
            await store.get("kept", "small/0")
        await store.close()
    finally:
        own.stop(kill=True)
