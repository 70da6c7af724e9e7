"""Limits with clear answers: rate and concurrency per namespace (429), sizes (413)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from eventbus.server import EmbeddedNats
from tests.support import Platform, start_platform

NS = "/api/v1/namespaces/_"
SLOW = "import time\ndef main(args):\n    time.sleep(1.5)\n    return {'ok': 1}\n"
BIG = "def main(args):\n    return {'blob': 'x' * 5000}\n"


@pytest.fixture(scope="module")
def limited(
    nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    started = start_platform(
        nats_server,
        Path(tmp_path_factory.mktemp("limited")),
        ns_rate_per_s=2,
        ns_burst=12,
        ns_concurrency=1,
        max_result_bytes=1000,
        max_body_bytes=65536,
    )
    yield started
    started.stop()


def key_for(platform: Platform, namespace: str) -> str:
    with platform.client() as admin:
        r = admin.post("/v1/auth/keys", json={"namespace": namespace})
        assert r.status_code == 201, r.text
        return str(r.json()["key"])


def test_over_the_rate_is_429_with_retry_after(limited: Platform) -> None:
    with limited.client(auth=key_for(limited, "rate")) as c:
        answers = [c.get("/v1/functions") for _ in range(20)]
    codes = [r.status_code for r in answers]
    assert codes[:12] == [200] * 12 and 429 in codes[12:], codes
    refused = next(r for r in answers if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert "rate" in refused.json()["detail"]


def test_over_the_concurrency_is_429(limited: Platform) -> None:
    with limited.client(auth=key_for(limited, "busy")) as c:
        code = {"exec": {"kind": "python:3", "code": SLOW}}
        assert c.put(f"{NS}/actions/slow", json=code).status_code == 200
        c.post(f"{NS}/actions/slow?blocking=true", json={})  # warm a worker
        # two calls at once, each 1.5 s long, on a namespace allowed one in flight: whichever
        # comes second is refused (asked again should the two not overlap on a loaded machine)
        refused: list[httpx.Response] = []
        for _ in range(10):
            with ThreadPoolExecutor(2) as pool:
                pair = list(
                    pool.map(lambda _: c.post(f"{NS}/actions/slow?blocking=true", json={}), (1, 2))
                )
            assert all(r.status_code in (200, 429) for r in pair), pair
            refused = [r for r in pair if r.status_code == 429]
            if refused:
                break
        assert len(refused) == 1, refused
        assert refused[0].headers["retry-after"] == "1"


def test_payload_and_result_sizes_are_413(limited: Platform) -> None:
    with limited.client(auth=key_for(limited, "sizes")) as c:
        assert c.put(
            f"{NS}/actions/big", json={"exec": {"kind": "python:3", "code": BIG}}
        ).is_success
        result = c.post(f"{NS}/actions/big?blocking=true&result=true", json={})
        assert result.status_code == 413, result.text
        assert "1000-byte" in result.json()["error"]  # OpenWhisk's error body
        body = c.post(f"{NS}/actions/big?blocking=true", content=b"{" + b" " * 70000 + b"}")
        assert body.status_code == 413


def test_past_saturation_every_answer_is_2xx_or_a_refusal_with_retry_after(
    limited: Platform,
) -> None:
    """Many callers at once on a namespace allowed one invocation in flight: each gets its
    result (or 202) or a 429/503 saying when to come back; no 500, no client timeout."""
    key = key_for(limited, "saturated")
    with limited.client(auth=key) as c:
        spec = {"handler": "main", "code": "import time\ndef main(p):\n    time.sleep(0.3)\n"}
        assert c.put("/v1/functions/nap", json={**spec, "concurrency": 4}).status_code < 300
        c.post("/v1/functions/nap/invoke", json={})  # warm a worker (or a 429: fine)

    def call(i: int) -> httpx.Response:
        # one connection per caller; a client timeout would raise here and fail the test
        with limited.client(auth=key, timeout=120) as each:
            return each.post(f"/v1/functions/nap/invoke{'?async=true' if i % 3 else ''}", json={})

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(call, range(32)))
    codes = sorted(r.status_code for r in answers)
    assert set(codes) <= {200, 202, 429, 503}, codes
    assert 429 in codes and any(code < 300 for code in codes), codes
    for refused in (r for r in answers if r.status_code in (429, 503)):
        assert int(refused.headers["retry-after"]) >= 1, refused.headers
        assert refused.headers["content-type"].startswith("application/problem+json")
