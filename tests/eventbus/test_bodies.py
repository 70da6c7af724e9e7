"""Body-only subscriptions (`eventbus.bodies`) against a real nats-server."""

from __future__ import annotations

import nats
from nats.aio.msg import Msg

from eventbus.bodies import subscribe_bodies
from tests.support import eventually


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

        sub = await subscribe_bodies(nc, "bodies.a.*", bodies.append)
        await nc.subscribe("bodies.>", cb=keep)  # the same messages, through nats-py as usual
        await subscribe_bodies(nc, "bodies.b", lambda body: bodies.append(b"b:" + body))
        await nc.flush()
        headers = {"ce-id": "1", "ce-type": "x.y", "Nats-Msg-Id": "m 1"}
        await sender.publish("bodies.a.one", b"with headers", headers=headers)
        await sender.publish("bodies.a.two", b"without")
        await sender.publish("bodies.b", b"other")
        await sender.flush()
        await eventually(lambda: len(bodies) == 3 and len(seen) == 3)
        assert sorted(bodies) == [b"b:other", b"with headers", b"without"]
        assert [m.headers for m in seen if m.subject == "bodies.a.one"] == [headers]
        assert nc.stats["in_msgs"] == 6
        await sub.unsubscribe()
        await nc.flush()
        await sender.publish("bodies.a.three", b"after")
        await sender.publish("bodies.b", b"still")
        await sender.flush()
        await eventually(lambda: len(seen) == 5 and len(bodies) == 4)
        assert b"after" not in bodies and bodies[-1] == b"b:still"
    finally:
        await sender.close()
        await nc.close()


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
        for i in range(20):
            await sender.publish("bodies.q", b"bad" if i == 5 else str(i).encode())
        await sender.flush()
        await eventually(lambda: len(got) == 19)
        assert sorted(got) == sorted(str(i).encode() for i in range(20) if i != 5)
        await sender.publish("bodies.q", b"later")  # the read loops survived the failure
        await sender.flush()
        await eventually(lambda: got[-1] == b"later")
    finally:
        for nc in (first, second, sender):
            await nc.close()
