"""What only the local directory backend promises: its layout, atomicity and confinement."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from eventbus.storage import (
    DEFAULT_CONTENT_TYPE,
    InvalidKeyError,
    KeyConflictError,
    LocalStorage,
    NoSuchKeyError,
    UnsupportedOperationError,
)

from .helpers import read_all, stream


def tree(path: Path) -> list[str]:
    """Every file and folder under ``path``, relative, sorted."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.fixture
async def bkt(local: LocalStorage) -> str:
    await local.create_bucket("bkt")
    return "bkt"


async def test_layout_hides_metadata(local: LocalStorage, bkt: str) -> None:
    root = Path(local.root)
    await local.put(bkt, "dir/file.txt", b"data", metadata={"k": "v"})
    assert (root / "bkt" / "dir" / "file.txt").read_bytes() == b"data"
    assert tree(root / "bkt") == ["dir", "dir/file.txt"]
    assert list((root / ".meta" / "bkt").rglob("*.json"))  # bucket.json and the sidecar
    assert [b.name for b in await local.list_buckets()] == ["bkt"]
    assert [o.key for o in (await local.list(bkt)).objects] == ["dir/file.txt"]
    assert local.source == root.as_uri() and local.name == "local"


async def test_failed_put_keeps_the_old_object_and_no_temporary_file(
    local: LocalStorage, bkt: str
) -> None:
    await local.put(bkt, "k", b"old", content_type="text/plain")

    async def broken() -> AsyncIterator[bytes]:
        yield b"new" * 1000
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await local.put(bkt, "k", broken())
    info, chunks = await local.get(bkt, "k")
    assert await read_all(chunks) == b"old" and info.content_type == "text/plain"
    assert tree(Path(local.root) / "bkt") == ["k"]


async def test_cancelled_put_removes_its_temporary_file(local: LocalStorage, bkt: str) -> None:
    started = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield b"x" * 100
        started.set()
        await asyncio.Event().wait()
        yield b"never"

    upload = asyncio.create_task(local.put(bkt, "sub/k", stalled()))
    await asyncio.wait_for(started.wait(), 5)
    assert len(tree(Path(local.root) / "bkt")) == 2  # sub/ and the temporary file
    upload.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upload
    await local.close()  # waits until the upload thread has given up and cleaned up
    assert tree(Path(local.root) / "bkt") == ["sub"]


async def test_leftover_temporary_files_are_not_objects(local: LocalStorage, bkt: str) -> None:
    leftover = Path(local.root) / "bkt" / f".deepfaas-{'0' * 32}.tmp"
    leftover.write_bytes(b"half an upload")
    assert (await local.list(bkt)).objects == ()
    with pytest.raises(NoSuchKeyError):
        await local.stat(bkt, leftover.name)
    await local.delete_bucket(bkt)  # counts as empty
    assert not await local.bucket_exists(bkt)


async def test_key_and_folder_clash(local: LocalStorage, bkt: str) -> None:
    await local.put(bkt, "a", b"file")
    await local.put(bkt, "x/y", b"nested")
    for key in ("a/b", "x"):
        with pytest.raises(KeyConflictError) as caught:
            await local.put(bkt, key, b"clash")
        assert caught.value.code == "conflict" and caught.value.key == key
    assert [o.key for o in (await local.list(bkt)).objects] == ["a", "x/y"]
    with pytest.raises(NoSuchKeyError):
        await local.stat(bkt, "x")  # a folder is not an object


async def test_delete_prunes_empty_folders(local: LocalStorage, bkt: str) -> None:
    await local.put(bkt, "p/q/r/s", b"1")
    await local.put(bkt, "p/keep", b"2")
    assert await local.delete(bkt, "p/q/r/s")
    assert tree(Path(local.root) / "bkt") == ["p", "p/keep"]


async def test_symlinks_never_lead_outside(local: LocalStorage, bkt: str, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    bucket_dir = Path(local.root) / "bkt"
    (bucket_dir / "link").symlink_to(outside, target_is_directory=True)
    (bucket_dir / "file-link").symlink_to(outside / "secret")
    with pytest.raises(InvalidKeyError) as caught:
        await local.put(bkt, "link/new", b"x")
    assert caught.value.reason == "resolves outside its bucket"
    with pytest.raises(InvalidKeyError):
        await local.get(bkt, "link/secret")
    with pytest.raises(NoSuchKeyError):
        await local.get(bkt, "file-link")
    assert (await local.list(bkt)).objects == ()
    assert tree(outside) == ["secret"]


async def test_files_put_there_by_hand_and_stale_metadata(local: LocalStorage, bkt: str) -> None:
    path = Path(local.root) / "bkt" / "dropped.csv"
    path.write_bytes(b"a,b\n")
    info = await local.stat(bkt, "dropped.csv")
    assert (info.etag, info.content_type, info.size) == (
        hashlib.md5(b"a,b\n").hexdigest(),
        DEFAULT_CONTENT_TYPE,
        4,
    )
    assert [o.key for o in (await local.list(bkt)).objects] == ["dropped.csv"]

    await local.put(bkt, "k", b"v1", content_type="text/plain", metadata={"m": "1"})
    path = Path(local.root) / "bkt" / "k"
    path.write_bytes(b"changed behind our back")
    info = await local.stat(bkt, "k")
    assert info.etag == hashlib.md5(b"changed behind our back").hexdigest()
    assert (info.content_type, dict(info.metadata)) == (DEFAULT_CONTENT_TYPE, {})


async def test_a_new_instance_sees_everything(local: LocalStorage, bkt: str) -> None:
    put = await local.put(bkt, "k", stream([b"abc"]), content_type="text/csv", metadata={"a": "b"})
    created = (await local.list_buckets())[0].created
    again = LocalStorage(local.root)
    try:
        assert (await again.list_buckets())[0].created == created is not None
        info = await again.stat(bkt, "k")
        assert (info.etag, info.content_type, dict(info.metadata)) == (
            put.etag,
            "text/csv",
            {"a": "b"},
        )
    finally:
        await again.close()


async def test_no_presigned_urls(local: LocalStorage, bkt: str) -> None:
    for call in (local.presigned_get_url(bkt, "k"), local.presigned_put_url(bkt, "k")):
        with pytest.raises(UnsupportedOperationError) as caught:
            await call
        assert caught.value.code == "unsupported"


async def test_invalid_key_writes_nothing_on_disk(local: LocalStorage, bkt: str) -> None:
    for key in ("../escape", "a/../../escape", "/abs"):
        with pytest.raises(InvalidKeyError):
            await local.put(bkt, key, b"x")
    assert tree(Path(local.root)) == sorted([".meta", ".meta/bkt", ".meta/bkt/bucket.json", "bkt"])
    assert not (Path(local.root).parent / "escape").exists()
