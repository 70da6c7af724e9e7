"""Body-only subscriptions (`eventbus.bodies`) against a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import nats
from nats.aio.msg import Msg

from eventbus.bodies import subscribe_bodies
from tests.support import eventually


async def delivered(
    sender: nats.NATS,
    subject: str,
    body: bytes,
    arrived: Callable[[], bool],
    headers: dict[str, str] | None = None,
) -> None:
    """Publish until ``arrived()``: on this VM a publish right after a subscription's flush is
    now and then not routed to it (plain nats-py subscriptions too), so wait for the fact."""

    async def sent() -> bool:
        await sender.publish(subject, body, headers=headers)
        await sender.flush()
        await asyncio.sleep(0.05)
        return arrived()

    await eventually(sent)


async def test_bodies_arrive_and_the_connections_other_subscriptions_still_decode(
    nats_url: str,
) -> None:
    nc = await nats.connect(nats_url)
    sender = await nats.connect(nats_url)
    try:
        bodies: list[bytes] = []
        seen: list[Msg] = []

        async def keep(msg: Msg) -> None:
            seen.append(msg)

        def both(body: bytes, raw: bytes) -> Callable[[], bool]:
            return lambda: raw in bodies and any(m.data == body for m in seen)

        sub = await subscribe_bodies(nc, "bodies.a.*", bodies.append)
        await nc.subscribe("bodies.>", cb=keep)  # the same messages, through nats-py as usual
        await subscribe_bodies(nc, "bodies.b", lambda body: bodies.append(b"b:" + body))
        await nc.flush()
        headers = {"ce-id": "1", "ce-type": "x.y", "Nats-Msg-Id": "m 1"}
        await delivered(sender, "bodies.a.one", b"with", both(b"with", b"with"), headers)
        await delivered(sender, "bodies.a.two", b"without", both(b"without", b"without"))
        await delivered(sender, "bodies.b", b"other", both(b"other", b"b:other"))
        assert set(bodies) == {b"with", b"without", b"b:other"}
        assert {m.subject: m.headers for m in seen}["bodies.a.one"] == headers
        await sub.unsubscribe()
        await nc.flush()
        await delivered(
            sender, "bodies.a.three", b"after", lambda: any(m.data == b"after" for m in seen)
        )
        await delivered(sender, "bodies.b", b"still", both(b"still", b"b:still"))
        assert b"after" not in bodies
    finally:
        await sender.close()
        await nc.close()


def real(bodies: list[bytes]) -> list[bytes]:
    """The bodies less the probes (one may have been sent more than once)."""
    return [body for body in bodies if body != b"probe"]


async def test_a_queue_group_gets_each_body_once_and_a_failing_reader_drops_only_its_message(
    nats_url: str,
) -> None:
    first, second, sender = [await nats.connect(nats_url) for _ in range(3)]
    try:
        got: list[bytes] = []

        def picky(body: bytes) -> None:
            if body == b"bad":
                raise ValueError("a reader's bug")
            got.append(body)

        for nc in (first, second):
            await subscribe_bodies(nc, "bodies.q", picky, queue="group")
            await nc.flush()
        await delivered(sender, "bodies.q", b"probe", lambda: b"probe" in got)
        for i in range(20):
            await sender.publish("bodies.q", b"bad" if i == 5 else str(i).encode())
        await sender.flush()
        await eventually(lambda: len(real(got)) == 19)
        assert sorted(real(got)) == sorted(str(i).encode() for i in range(20) if i != 5)
        # the read loops survived the failure
        await delivered(sender, "bodies.q", b"later", lambda: b"later" in got)
    finally:
        for nc in (first, second, sender):
            await nc.close()
