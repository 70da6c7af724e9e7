"""OSCAR's storage client on a SeaweedFS store: the service names the S3 endpoint, and a file
its storage client uploads straight into SeaweedFS is processed like an upload to OSCAR's MinIO.

The platform never hands out the store's credentials (they are the platform's, not the
namespace's): the operator, who holds them, gives them to the client, as to any S3 client.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from oscar_python.client import Client
from oscar_python.storage import Storage

from eventbus.server import EmbeddedNats
from eventbus.storage.seaweedfs import EmbeddedSeaweed
from tests.e2e.test_oscar import fdl, oscar_client
from tests.support import Platform, start_platform, wait_for


@pytest.fixture(scope="module")
def platform(
    nats_server: EmbeddedNats, seaweed: EmbeddedSeaweed, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    started = start_platform(
        nats_server,
        Path(tmp_path_factory.mktemp("platform")),
        storage_backend="seaweedfs",
        storage_s3_endpoint=seaweed.s3_endpoint,
        storage_seaweedfs_filer=seaweed.filer,
        storage_s3_access_key=seaweed.access_key,
        storage_s3_secret_key=seaweed.secret_key,
        storage_s3_secure="false",
    )
    yield started
    started.stop()


def _outputs(storage: Storage, local: Path, tmp_path: Path) -> bytes | None:
    listing: dict[str, Any] = storage.list_files_from_path("minio.default", "sw-out/results")
    if not any(o["Key"] == "results/hello.up" for o in listing.get("Contents", [])):
        # the dispatcher learns of a new trigger through a KV watch: upload again until it has
        storage.upload_file("minio.default", str(local), "sw-in/in")
        return None
    storage.download_file("minio.default", str(tmp_path), "sw-out/results/hello.up")
    return (tmp_path / "hello.up").read_bytes()


def test_the_storage_client_uploads_to_seaweedfs(
    platform: Platform, seaweed: EmbeddedSeaweed, tmp_path: Path
) -> None:
    oscar: Client = oscar_client(platform)
    service = fdl("sw-upper", bucket="sw-in")
    service["output"][0]["path"] = "sw-out/results"
    oscar.create_service(service)
    try:
        provider = oscar.get_service("sw-upper").json()["storage_providers"]["minio"]["default"]
        assert provider["endpoint"] == f"http://{seaweed.s3_endpoint}"
        assert provider["access_key"] == provider["secret_key"] == ""
        storage = oscar.create_storage_client("sw-upper")
        storage.storage_providers["minio"]["default"].update(
            access_key=seaweed.access_key, secret_key=seaweed.secret_key
        )
        local = tmp_path / "hello.txt"
        local.write_bytes(b"hello")
        out = wait_for(lambda: _outputs(storage, local, tmp_path), timeout=90, interval=2)
        assert out == b"HELLO"
        jobs = oscar.list_jobs("sw-upper").json()["jobs"]  # uploads again may still run
        done = [job for job, info in jobs.items() if info["status"] == "Succeeded"]
        assert done and "Failed" not in {info["status"] for info in jobs.values()}
        assert "processing in/hello.txt" in oscar.get_job_logs("sw-upper", done[0]).text
    finally:
        oscar.remove_service("sw-upper")
