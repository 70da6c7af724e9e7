"""Upload a file, get it processed: storage event -> trigger -> function -> output object.

Runs the real platform with the dispatcher as its own process (`deepfaas dispatcher`), so a test
can kill it mid-run the way an operator's machine would lose it.
"""

from __future__ import annotations

import concurrent.futures
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from eventbus.server import EmbeddedNats
from tests.e2e.test_faults import bucket_keys, ready_instances, recorded
from tests.support import Platform, start_platform, wait_for

# Each run leaves one object `<key>/<uuid>` in the runs bucket, through ctx.storage.
RECORDER = """
import asyncio
import time
import uuid


def main(params: dict, ctx) -> dict:
    time.sleep(params.get("s", 0))
    key = params["object"]["key"] + "/" + uuid.uuid4().hex
    asyncio.run(ctx.storage.put(params["runs"], key, b"ran"))
    return {"key": params["object"]["key"], "attempt": ctx.attempt}
"""


def start_dispatcher(nats: EmbeddedNats) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **nats.auth("dispatcher").env(),
        "DEEPFAAS_NATS_URL": nats.url,
        "DEEPFAAS_ACK_WAIT_S": "2",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "dispatcher"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[2],
    )


@pytest.fixture(scope="module")
def split(
    nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Platform, list[subprocess.Popen[bytes]]]]:
    platform = start_platform(
        nats_server, Path(tmp_path_factory.mktemp("platform")), dispatcher="false"
    )
    dispatchers = [start_dispatcher(nats_server)]
    yield platform, dispatchers
    for proc in dispatchers:
        proc.kill()
        proc.wait()
    platform.stop()


@pytest.fixture
def client(split: tuple[Platform, list[subprocess.Popen[bytes]]]) -> Iterator[httpx.Client]:
    with split[0].client() as c:
        yield c


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def test_an_upload_makes_a_thumbnail_in_the_output_bucket(client: httpx.Client) -> None:
    for bucket in ("inputs", "thumbs"):
        assert client.put(f"/v1/buckets/{bucket}").status_code in (200, 201)
    r = client.put(
        "/v1/functions/thumbnail",
        json={"handler": "functions.thumbnail.handler:handle", "timeout_s": 30},
    )
    assert r.status_code in (200, 201), r.text
    r = client.post(
        "/v1/triggers",
        json={
            "name": "make-thumbs",
            "function": "thumbnail",
            "bucket": "inputs",
            "output": {"bucket": "thumbs", "key_template": "{stem}.thumb.png"},
        },
    )
    assert r.status_code == 201, r.text
    r = client.put(
        "/v1/buckets/inputs/objects/photos/cat.png",
        content=png(300, 200),
        headers={"content-type": "image/png"},
    )
    assert r.status_code == 201, r.text
    thumb = wait_for(
        lambda: (
            resp
            if (resp := client.get("/v1/buckets/thumbs/objects/photos/cat.thumb.png")).status_code
            == 200
            else None
        ),
        timeout=30,
    )
    assert thumb.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(thumb.content)).size == (128, 85)
    [record] = [a for a in client.get("/v1/activations?function=thumbnail").json()]
    full = client.get(f"/v1/activations/{record['id']}").json()
    assert full["status"] == "success" and full["cause"]
    assert full["output"]["bucket"] == "thumbs" and full["output"]["key"] == "photos/cat.thumb.png"


def upload_many(client: httpx.Client, bucket: str, names: list[str]) -> None:
    def put(name: str) -> int:
        return client.put(f"/v1/buckets/{bucket}/objects/{name}", content=name.encode()).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert set(pool.map(put, names)) == {201}


@pytest.mark.parametrize("kill", [False, True], ids=["calm", "killing-worker-and-dispatcher"])
def test_200_uploads_make_exactly_200_activations_and_outputs(
    client: httpx.Client,
    split: tuple[Platform, list[subprocess.Popen[bytes]]],
    tmp_path: Path,
    kill: bool,
) -> None:
    _, dispatchers = split
    tag = "k" if kill else "c"
    src, out, runs = f"in-{tag}", f"out-{tag}", f"runs-{tag}"
    for bucket in (src, out, runs):
        assert client.put(f"/v1/buckets/{bucket}").status_code in (200, 201)
    fn = f"rec-{tag}"
    client.put(
        f"/v1/functions/{fn}",
        json={
            "handler": "main",
            "code": RECORDER,
            "min_scale": 2,
            "max_scale": 2,
            "concurrency": 8,
        },
    ).raise_for_status()
    client.post(
        "/v1/triggers",
        json={
            "name": f"t-{tag}",
            "function": fn,
            "bucket": src,
            "params": {"runs": runs, "s": 0.05 if kill else 0},
            "output": {"bucket": out, "key_template": "{key}.json"},
        },
    ).raise_for_status()
    workers = ready_instances(client, fn, 2)
    names = [f"f{i:03d}.txt" for i in range(200)]
    if not kill:
        upload_many(client, src, names)
    else:
        upload_many(client, src, names[:100])
        os.kill(workers[0]["pid"], signal.SIGKILL)
        dispatchers[-1].send_signal(signal.SIGKILL)
        dispatchers[-1].wait()
        upload_many(client, src, names[100:])  # accepted while no dispatcher runs
        dispatchers.append(start_dispatcher(split[0].nats))
    wait_for(lambda: len(bucket_keys(client, out)) >= 200, timeout=90, interval=0.25)
    time.sleep(1.0)  # anything extra would show up now
    assert sorted(bucket_keys(client, out)) == sorted(f"{n}.json" for n in names)
    records = client.get("/v1/activations", params={"function": fn, "limit": 200}).json()
    assert len({r["id"] for r in records}) == 200
    assert all(r["status"] == "success" for r in records)
    # The function appends its key as its last act before completing. A worker killed between
    # that append and its final record makes the append happen again on the retry (at-least-once
    # execution); a completed activation never runs again (exactly-once completion).
    lines = recorded(client, runs)
    assert sorted(set(lines)) == sorted(names)
    repeated = {line for line in lines if lines.count(line) > 1}
    assert len(lines) - 200 <= 8  # at most the killed worker's concurrency
    if not kill:
        assert not repeated
    for record in records:
        result = client.get(f"/v1/activations/{record['id']}/result").json()["result"]
        if result["key"] in repeated:
            assert record["attempts"] >= 2 and result["attempt"] >= 2
