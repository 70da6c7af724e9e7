"""A gateway with no controller on its bus (split mode while the controller is down): what
only the controller knows is a 503 with Retry-After, not an empty answer."""

from __future__ import annotations

import httpx
import uvicorn

from tests.gateway.test_event_stream_close import served

__all__ = ["served"]


async def test_what_only_the_controller_knows_is_a_503_without_it(
    served: tuple[uvicorn.Server, httpx.AsyncClient],
) -> None:
    _, client = served
    spec = {"handler": "main", "code": "def main(args):\n    return args\n"}
    assert (await client.put("/v1/functions/alone", json=spec)).is_success
    for path in (
        "/v1/functions/alone/instances",
        "/v1/runtimes",
        "/v1/functions/alone/runtime",
    ):
        r = await client.get(path)
        assert r.status_code == 503, (path, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert int(r.headers["retry-after"]) > 0
        assert "controller did not answer" in r.json()["detail"]
