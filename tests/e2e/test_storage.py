"""Storage over HTTP with the platform running: buckets, objects, events, the CLI."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from cli.storage import storage_app
from eventbus.connection import Bus
from eventbus.server import EmbeddedNats
from eventbus.storage import (
    LocalStorage,
    ObjectInfo,
    S3Storage,
    minio_notification,
    object_created_record,
)
from eventbus.triggers import activation_id_for
from eventbus.types import CloudEvent
from gateway.storage_settings import StorageSettings, create_storage
from tests.e2e.test_invoke import deploy
from tests.eventbus.test_storage_events import (  # noqa: F401 (a fixture used by name)
    bucket_events,
    moto_endpoint,
)
from tests.support import Platform, start_platform, wait_activation, wait_for

NOW = datetime.now(UTC)


@pytest.fixture
def bucket(client: httpx.Client) -> str:
    name = f"e2e-{uuid.uuid4().hex[:12]}"
    assert client.put(f"/v1/buckets/{name}").status_code == 201
    return name


def events_of(platform: Platform, bucket: str) -> list[CloudEvent]:
    """The storage events of a bucket now on the platform's bus."""

    async def read() -> list[CloudEvent]:
        bus = await Bus.connect(platform.nats.admin_url, name="test-e2e-storage")
        try:
            return await bucket_events(bus, bucket)
        finally:
            await bus.close()

    return asyncio.run(read())


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["detail"]
    return body


def stored_files(platform: Platform) -> set[str]:
    """Every file under the data dir but logs: where a stray write would show."""
    found = set()
    for folder, _, files in os.walk(platform.data_dir):
        for name in files:
            path = os.path.relpath(os.path.join(folder, name), platform.data_dir)
            if not path.startswith("logs") and path != "platform.log":
                found.add(path)
    return found


def test_buckets_create_list_head_delete(client: httpx.Client) -> None:
    name = f"e2e-{uuid.uuid4().hex[:12]}"
    created = client.put(f"/v1/buckets/{name}")
    assert created.status_code == 201 and created.json()["name"] == name
    problem(client.put(f"/v1/buckets/{name}"), 409)
    assert name in [b["name"] for b in client.get("/v1/buckets").json()]
    assert client.head(f"/v1/buckets/{name}").status_code == 200
    assert client.put(f"/v1/buckets/{name}/objects/x", content=b"x").status_code == 201
    problem(client.delete(f"/v1/buckets/{name}"), 409)
    assert client.delete(f"/v1/buckets/{name}/objects/x").status_code == 204
    assert client.delete(f"/v1/buckets/{name}").status_code == 204
    assert client.head(f"/v1/buckets/{name}").status_code == 404
    problem(client.put("/v1/buckets/Not_A_Bucket"), 422)


def test_round_trip_head_range_overwrite_delete_and_events(
    platform: Platform, client: httpx.Client, bucket: str
) -> None:
    key = "in/dir with space/a+b ü.txt"
    path = f"/v1/buckets/{bucket}/objects/in/dir%20with%20space/a+b%20%C3%BC.txt"
    body = b"hello storage"
    put = client.put(
        path, content=body, headers={"content-type": "text/plain", "x-amz-meta-lab": "cryo"}
    )
    assert put.status_code == 201, put.text
    info = put.json()
    assert info["key"] == key and info["size"] == len(body)
    assert info["etag"] == hashlib.md5(body).hexdigest()
    assert put.headers["etag"] == f'"{info["etag"]}"'
    assert info["metadata"] == {"lab": "cryo"}

    got = client.get(path)
    assert got.status_code == 200 and got.content == body
    assert got.headers["content-type"] == "text/plain"
    assert got.headers["etag"] == put.headers["etag"]
    assert got.headers["content-length"] == str(len(body))
    assert got.headers["x-amz-meta-lab"] == "cryo"

    head = client.head(path)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(body))
    assert head.headers["etag"] == put.headers["etag"]

    ranged = client.get(path, headers={"range": "bytes=6-12"})
    assert ranged.status_code == 206 and ranged.content == b"storage"
    assert ranged.headers["content-range"] == f"bytes 6-12/{len(body)}"
    assert client.get(path, headers={"range": "bytes=-4"}).content == b"rage"
    assert client.get(path, headers={"range": "bytes=99-"}).status_code == 416

    again = client.put(path, content=b"second", headers={"x-meta-lab": "wet"})
    assert again.status_code == 200 and again.json()["metadata"] == {"lab": "wet"}
    assert client.get(path).content == b"second"

    assert client.delete(path).status_code == 204
    problem(client.get(path), 404)
    assert client.head(path).status_code == 404
    assert client.delete(path).status_code == 204  # missing: still 204, and no event

    events = events_of(platform, bucket)
    kinds = [e.type.rsplit(".", 1)[1] for e in events]
    assert kinds == ["created", "created", "deleted"]
    assert {e.subject for e in events} == {key}
    assert {e.source for e in events} == {f"/storage/local/{bucket}"}
    record = events[0].json_data()
    assert record["s3"]["object"]["eTag"] == info["etag"]
    assert record["s3"]["object"]["userMetadata"]["X-Amz-Meta-Lab"] == "cryo"


def test_a_20mb_streamed_upload(platform: Platform, client: httpx.Client, bucket: str) -> None:
    block = os.urandom(1024 * 1024)
    digest = hashlib.md5()

    def chunks() -> Iterator[bytes]:
        for index in range(20):
            chunk = bytes([index]) + block[1:]
            digest.update(chunk)
            yield chunk

    path = f"/v1/buckets/{bucket}/objects/big/blob.bin"
    put = client.put(path, content=chunks())  # chunked: no Content-Length, over the body limit
    assert put.status_code == 201, put.text
    assert put.json()["size"] == 20 * 1024 * 1024
    assert put.json()["etag"] == digest.hexdigest()

    received = hashlib.md5()
    with client.stream("GET", path) as response:
        assert response.headers["content-length"] == str(20 * 1024 * 1024)
        for part in response.iter_bytes():
            received.update(part)
    assert received.hexdigest() == digest.hexdigest()
    [event] = events_of(platform, bucket)
    assert event.subject == "big/blob.bin" and event.json_data()["s3"]["object"]["size"] == (
        20 * 1024 * 1024
    )


READ_UPLOAD = """
def main(params):
    return {"key": params["object"]["key"], "size": params["object"]["size"]}
"""


def test_an_upload_runs_the_function_its_trigger_names(
    platform: Platform, client: httpx.Client, bucket: str
) -> None:
    deploy(client, "read-upload", READ_UPLOAD)
    trigger = f"t-{bucket}"
    body = {"name": trigger, "function": "read-upload", "bucket": bucket, "key_prefix": "in/"}
    assert client.post("/v1/triggers", json=body).status_code == 201
    assert client.put(f"/v1/buckets/{bucket}/objects/in/scan 1.tif", content=b"tiff").is_success
    assert client.put(f"/v1/buckets/{bucket}/objects/out/x.tif", content=b"no").is_success
    created = [e for e in events_of(platform, bucket) if e.subject == "in/scan 1.tif"]
    record = wait_activation(client, activation_id_for(created[0].id, trigger), timeout=30)
    assert record["status"] == "success", record
    assert record["result"] == {"key": "in/scan 1.tif", "size": 4}
    client.delete(f"/v1/triggers/{trigger}")


def test_a_body_shorter_than_its_content_length_stores_nothing(
    platform: Platform, client: httpx.Client, bucket: str
) -> None:
    def mine() -> set[str]:  # other tests' functions may still be writing their outputs
        return {path for path in stored_files(platform) if bucket in path or "tmp" in path}

    before = mine()
    url = urlsplit(platform.url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    conn.putrequest("PUT", f"/v1/buckets/{bucket}/objects/short.bin")
    conn.putheader("content-length", "100")
    conn.endheaders()
    conn.send(b"only ten b")
    conn.close()  # the client went away mid-body
    wait_for(lambda: mine() == before, timeout=10)  # no temporary file left
    problem(client.get(f"/v1/buckets/{bucket}/objects/short.bin"), 404)


def test_listing_with_prefix_and_delimiter(client: httpx.Client, bucket: str) -> None:
    keys = ["a/1.txt", "a/2.txt", "a/sub/3.txt", "b/4.txt", "top.txt"]
    for key in keys:
        assert client.put(f"/v1/buckets/{bucket}/objects/{key}", content=key.encode()).is_success
    listing = client.get(f"/v1/buckets/{bucket}/objects").json()
    assert [o["key"] for o in listing["objects"]] == keys
    root = client.get(f"/v1/buckets/{bucket}/objects", params={"delimiter": "/"}).json()
    assert [o["key"] for o in root["objects"]] == ["top.txt"]
    assert root["prefixes"] == ["a/", "b/"]
    under_a = client.get(
        f"/v1/buckets/{bucket}/objects", params={"prefix": "a/", "delimiter": "/"}
    ).json()
    assert [o["key"] for o in under_a["objects"]] == ["a/1.txt", "a/2.txt"]
    assert under_a["prefixes"] == ["a/sub/"]
    page = client.get(f"/v1/buckets/{bucket}/objects", params={"limit": 2}).json()
    assert [o["key"] for o in page["objects"]] == keys[:2] and page["is_truncated"]
    rest = client.get(
        f"/v1/buckets/{bucket}/objects", params={"start_after": page["next_marker"]}
    ).json()
    assert [o["key"] for o in rest["objects"]] == keys[2:]
    problem(client.get(f"/v1/buckets/{bucket}/objects", params={"limit": 0}), 422)


TRAVERSALS = [
    "../escape.txt",
    "../../escape.txt",
    "a/../../escape.txt",
    "a/./b.txt",
    "..%2F..%2Fescape.txt",
    "%2E%2E/escape.txt",
    "a%5C..%5Cescape.txt",
    "/etc/passwd",
    "a//b.txt",
    "dir/",
    "nul%00.txt",
]


@pytest.mark.parametrize("raw_key", TRAVERSALS)
def test_unsafe_keys_are_refused_before_anything_is_written(
    platform: Platform, client: httpx.Client, bucket: str, raw_key: str
) -> None:
    before = stored_files(platform)
    url = urlsplit(platform.url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:  # http.client sends the path as it is: no dot segments are removed on the way
        auth = "Basic " + base64.b64encode(platform.auth.encode()).decode()
        conn.request(
            "PUT",
            f"/v1/buckets/{bucket}/objects/{raw_key}",
            body=b"evil",
            headers={"authorization": auth},
        )
        response = conn.getresponse()
        status, text = response.status, response.read().decode()
    finally:
        conn.close()
    assert status in (400, 404, 422), text
    assert stored_files(platform) == before
    assert client.get(f"/v1/buckets/{bucket}/objects").json()["objects"] == []


def test_a_missing_bucket_is_404(client: httpx.Client) -> None:
    missing = f"nope-{uuid.uuid4().hex[:8]}"
    problem(client.put(f"/v1/buckets/{missing}/objects/k", content=b"x"), 404)
    problem(client.get(f"/v1/buckets/{missing}/objects/k"), 404)
    problem(client.get(f"/v1/buckets/{missing}/objects"), 404)
    problem(client.delete(f"/v1/buckets/{missing}/objects/k"), 404)
    problem(client.delete(f"/v1/buckets/{missing}"), 404)
    assert client.head(f"/v1/buckets/{missing}/objects/k").status_code == 404


def test_cli_upload_ls_download(platform: Platform, bucket: str, tmp_path: Path) -> None:
    source = tmp_path / "data"
    (source / "sub").mkdir(parents=True)
    files = {"a.txt": b"alpha", "sub/b.bin": os.urandom(3 * 1024 * 1024), "sub/c d.txt": b"c"}
    for name, content in files.items():
        (source / name).write_bytes(content)
    single = tmp_path / "single.json"
    single.write_bytes(b"{}")
    runner = CliRunner(env={"DEEPFAAS_AUTH": platform.auth})
    url = ["--url", platform.url]

    uploaded = runner.invoke(
        storage_app, ["upload", str(source), str(single), f"{bucket}/runs/1", *url, "-c", "3"]
    )
    assert uploaded.exit_code == 0, uploaded.output
    listed = runner.invoke(storage_app, ["ls", f"{bucket}/runs/1/", "--recursive", *url, "--json"])
    assert listed.exit_code == 0, listed.output
    expected = sorted([f"runs/1/data/{n}" for n in files] + ["runs/1/single.json"])
    assert expected == sorted(o["key"] for o in orjson.loads(listed.stdout)["objects"])
    folders = runner.invoke(storage_app, ["ls", f"{bucket}/runs/1/", *url, "--json"])
    assert orjson.loads(folders.stdout)["prefixes"] == ["runs/1/data/"]
    folder = orjson.loads(
        runner.invoke(storage_app, ["ls", f"{bucket}/runs/1/data", *url, "--json"]).stdout
    )  # no trailing slash: the folder's contents, one level
    assert sorted(o["key"] for o in folder["objects"]) == sorted(
        f"runs/1/data/{n}" for n in files if "/" not in n
    )
    assert folder["prefixes"] == sorted(
        {f"runs/1/data/{n.split('/')[0]}/" for n in files if "/" in n}
    )

    dest = tmp_path / "out"
    got = runner.invoke(storage_app, ["download", f"{bucket}/runs/1/data", str(dest), *url])
    assert got.exit_code == 0, got.output
    for name, content in files.items():
        assert (dest / "data" / name).read_bytes() == content
    one = runner.invoke(storage_app, ["download", f"{bucket}/runs/1/single.json", str(dest), *url])
    assert one.exit_code == 0 and (dest / "single.json").read_bytes() == b"{}"

    events = events_of(platform, bucket)
    assert sorted(e.subject or "" for e in events) == expected  # one created event per file

    missing = runner.invoke(storage_app, ["download", f"{bucket}/nothing/here", *url])
    assert missing.exit_code == 1
    assert runner.invoke(storage_app, ["bucket", "delete", bucket, *url]).exit_code == 1


async def test_create_storage_from_settings(tmp_path: Path) -> None:
    local = create_storage(StorageSettings(data_dir=tmp_path))
    assert isinstance(local, LocalStorage)
    assert local.root == str((tmp_path / "storage").resolve())
    await local.close()
    s3 = create_storage(
        StorageSettings(
            storage_backend="s3",
            storage_s3_endpoint="127.0.0.1:9000",
            storage_s3_access_key="k",  # type: ignore[arg-type]
            storage_s3_secret_key="s",  # type: ignore[arg-type]
            storage_s3_secure=False,
        )
    )
    assert isinstance(s3, S3Storage) and s3.source == "http://127.0.0.1:9000"
    await s3.close()
    with pytest.raises(ValueError, match="ENDPOINT"):
        create_storage(StorageSettings(storage_backend="s3"))
    with pytest.raises(ValueError, match="needs storage_backend=s3"):
        StorageSettings(storage_events="bridge")


@pytest.fixture
def s3_endpoint(request: pytest.FixtureRequest) -> str:
    """``host:port`` of a moto S3 server, standing in for MinIO."""
    endpoint: str = request.getfixturevalue("moto_endpoint")
    return endpoint


def test_with_minio_the_bridge_announces_uploads_once(
    nats_server: EmbeddedNats, s3_endpoint: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    subject = f"minio.{tag}"
    minio = start_platform(
        nats_server,
        tmp_path / "minio-platform",
        storage_backend="s3",
        storage_s3_endpoint=s3_endpoint,
        storage_s3_access_key="testing",
        storage_s3_secret_key="testing",
        storage_s3_secure="false",
        storage_s3_region="us-east-1",
        storage_events="bridge",
        storage_bridge_stream=f"MINIO_{tag}",
        storage_bridge_subject=subject,
    )
    try:
        with minio.client() as client:
            bucket = f"mn-{tag}"
            assert client.put(f"/v1/buckets/{bucket}").status_code == 201
            put = client.put(f"/v1/buckets/{bucket}/objects/in/a b.txt", content=b"via s3")
            assert put.status_code == 201, put.text
            path = f"/v1/buckets/{bucket}/objects/in/a b.txt"
            assert client.get(path).content == b"via s3"
            ranged = client.get(path, headers={"range": "bytes=4-"})
            assert ranged.status_code == 206 and ranged.content == b"s3"
            assert client.get(path, headers={"range": "bytes=50-"}).status_code == 416
            assert client.head(path).headers["content-length"] == "6"
            listing = client.get(f"/v1/buckets/{bucket}/objects", params={"delimiter": "/"})
            assert listing.json()["prefixes"] == ["in/"]
            assert client.put(f"/v1/buckets/{bucket}/objects/gone", content=b"").status_code == 201
            assert client.delete(f"/v1/buckets/{bucket}/objects/gone").status_code == 204
        assert events_of(minio, bucket) == []  # the gateway leaves it to MinIO's notifications

        # what MinIO's NATS target publishes for that upload
        body = put.json()
        info = ObjectInfo(bucket, body["key"], body["size"], body["etag"], "text/plain", NOW)
        message = minio_notification(object_created_record(info))

        async def publish() -> None:
            bus = await Bus.connect(minio.nats.admin_url, name="test-minio-notify")
            try:
                await bus.js.publish(subject, message)
                await bus.js.publish(subject, message)  # MinIO may send one twice
            finally:
                await bus.close()

        asyncio.run(publish())
        [event] = wait_for(lambda: events_of(minio, bucket), timeout=20)
        assert event.source == f"/storage/minio/{bucket}" and event.subject == "in/a b.txt"
        assert event.json_data()["s3"]["object"]["eTag"] == body["etag"]
        assert len(events_of(minio, bucket)) == 1
    finally:
        minio.stop()
