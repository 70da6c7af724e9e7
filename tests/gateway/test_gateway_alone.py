"""A gateway with no controller on its bus (split mode while the controller is down): what
only the controller knows is a 503 with Retry-After, not an empty answer."""

from __future__ import annotations

import httpx
import uvicorn

from tests.gateway.test_event_stream_close import served

__all__ = ["served"]


async def test_instances_without_a_controller_are_a_503(
    served: tuple[uvicorn.Server, httpx.AsyncClient],
) -> None:
    _, client = served
    spec = {"handler": "main", "code": "def main(args):\n    return args\n"}
    assert (await client.put("/v1/functions/alone", json=spec)).is_success
    r = await client.get("/v1/functions/alone/instances")
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert int(r.headers["retry-after"]) > 0
    assert "controller did not answer" in r.json()["detail"]


async def test_runtimes_without_a_controller_are_a_503(
    served: tuple[uvicorn.Server, httpx.AsyncClient],
) -> None:
    _, client = served
    spec = {"handler": "main", "code": "def main(args):\n    return args\n"}
    assert (await client.put("/v1/functions/alone-rt", json=spec)).is_success
    for path in ("/v1/runtimes", "/v1/functions/alone-rt/runtime"):
        r = await client.get(path)
        assert r.status_code == 503, (path, r.text)
        assert int(r.headers["retry-after"]) > 0
        assert "controller did not answer" in r.json()["detail"]
