"""The floors every figure is printed beside: a no-op NATS responder and a bare ASGI app."""

from __future__ import annotations

import asyncio
import sys
from typing import Any


async def bare_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The least an ASGI app can do: read the body, answer 200 with ``{}``."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": b"{}"})


async def nats_responder(url: str, subject: str) -> None:
    """Answer every request on ``subject`` with ``{}``, in a queue group like workers."""
    import nats

    nc = await nats.connect(url)

    async def on(msg: Any) -> None:
        await msg.respond(b"{}")

    await nc.subscribe(subject, queue="floor", cb=on)
    await asyncio.Event().wait()


def main() -> None:
    """`python -m bench.floors asgi PORT` or `python -m bench.floors nats URL SUBJECT`."""
    import uvloop

    if sys.argv[1] == "asgi":
        import uvicorn

        uvicorn.run(
            bare_asgi,
            host="127.0.0.1",
            port=int(sys.argv[2]),
            loop="uvloop",
            http="httptools",
            log_level="warning",
            access_log=False,
        )
    else:
        uvloop.run(nats_responder(sys.argv[2], sys.argv[3]))


if __name__ == "__main__":
    main()
