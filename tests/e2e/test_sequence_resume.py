"""An OpenWhisk sequence whose gateway is killed mid-run is resumed by another gateway.

Split mode, as `deepfaas controller|gateway` start the parts, on one real nats-server: a
sequence of three actions (the middle one slow) is invoked without blocking through gateway 1,
which is killed with SIGKILL while the middle component runs. Gateway 2 takes over the
sequence once gateway 1's hold runs out and finishes it: the result is the whole chain's, each
component ran once (one try each, the slow one not started again), and the sequence's record
and completion are written once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import nats
import orjson
import pytest

from eventbus.server import EmbeddedNats
from eventbus.streams import SEQUENCES_KV
from gateway.openwhisk.sequences import component_id
from tests.e2e.test_replicas import SplitPlatform, _ready
from tests.support import wait_for

NS = "/api/v1/namespaces/_"
INC = "def main(args):\n    return {'n': args.get('n', 0) + 1}\n"
SLOW = "import time\ndef main(args):\n    time.sleep(10)\n    return {'n': args['n'] * 2}\n"


@pytest.fixture
def split(nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    platform = SplitPlatform(nats_server, tmp_path_factory.mktemp("resume"))
    platform.bootstrap()
    platform.start("controller", "controller", DEEPFAAS_STATE_DIR=str(platform.base / "c"))
    with platform.serving():
        yield platform


def _gateway(platform: SplitPlatform, name: str, hold_s: float = 2) -> httpx.Client:
    part = platform.start(name, "gateway", DEEPFAAS_SEQUENCE_HOLD_S=str(hold_s))
    wait_for(lambda: _ready(part), timeout=120)
    return platform.client(part)


def _record(client: httpx.Client, activation_id: str) -> dict[str, Any] | None:
    got = client.get(f"/v1/activations/{activation_id}")
    return got.json() if got.status_code == 200 else None


def _completions(nats_url: str, activation_id: str) -> int:
    """How many `activation.completed` events the EVENTS stream holds for ``activation_id``."""

    async def count() -> int:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            sub = await js.subscribe("activation.>", ordered_consumer=True)
            found = 0
            while True:
                try:
                    msg = await sub.next_msg(timeout=1)
                except nats.errors.TimeoutError:
                    return found
                if (msg.headers or {}).get("ce-id") == f"{activation_id}-completed":
                    found += 1
        finally:
            await nc.close()

    return asyncio.run(count())


def test_a_sequence_outlives_its_gateway(split: SplitPlatform, nats_server: EmbeddedNats) -> None:
    with _gateway(split, "gateway1") as first:
        seq = _start_and_kill(split, first)
    with _gateway(split, "gateway2") as second:
        _finished_once(second, nats_server, seq)


def _chain(client: httpx.Client, prefix: str, components: list[str], slow: str = SLOW) -> None:
    """Actions `<prefix>-inc` and `<prefix>-slow` (``slow``'s code), and the sequence
    `<prefix>-chain` of ``components`` (`inc` or `slow`)."""
    for name, code in (("inc", INC), ("slow", slow)):
        body = {"exec": {"kind": "python:3", "code": code}, "limits": {"timeout": 30_000}}
        made = client.put(f"{NS}/actions/{prefix}-{name}?overwrite=true", json=body)
        assert made.status_code == 200, made.text
    parts = [f"{prefix}-{c}" for c in components]
    chain = {"exec": {"kind": "sequence", "components": parts}}
    assert client.put(f"{NS}/actions/{prefix}-chain?overwrite=true", json=chain).status_code == 200


def _start_and_kill(split: SplitPlatform, first: httpx.Client) -> str:
    """Invoke the chain without blocking; SIGKILL the gateway while its slow part runs."""
    _chain(first, "rs", ["inc", "slow", "inc"])

    accepted = first.post(f"{NS}/actions/rs-chain", json={"n": 1})
    assert accepted.status_code == 202, accepted.text
    seq = accepted.json()["activationId"]
    ids = [component_id(seq, i) for i in range(3)]
    wait_for(lambda: (_record(first, ids[1]) or {}).get("status") == "running", timeout=60)
    split.parts["gateway1"].kill()  # mid-sequence: the slow component is running
    return seq


def _finished_once(second: httpx.Client, nats_server: EmbeddedNats, seq: str) -> None:
    ids = [component_id(seq, i) for i in range(3)]
    wait_for(lambda: (_record(second, seq) or {}).get("status") == "success", timeout=90)
    record = _record(second, seq)
    assert record is not None
    assert record["result"] == {"n": 5}  # ((1 + 1) * 2) + 1
    assert record["logs"] == ids
    for component in ids:
        done = _record(second, component)
        assert done is not None and done["status"] == "success", done
        assert done["attempts"] == 1 and done["cause"] == seq
    # the slow component ran before the kill and was not started again; the last one after
    slow, last = _record(second, ids[1]), _record(second, ids[2])
    assert slow is not None and last is not None
    assert slow["worker"] and last["start"] >= slow["end"]
    time.sleep(0.5)
    assert _completions(nats_server.admin_url, seq) == 1
    for component in ids:
        assert _completions(nats_server.admin_url, component) == 1


def _steal(nats_url: str, activation_id: str, hold_s: float) -> None:
    """Write the sequence's hold as another gateway would on taking it over."""

    async def go() -> None:
        nc = await nats.connect(nats_url)
        try:
            kv = await nc.jetstream().key_value(SEQUENCES_KV)
            for _ in range(20):  # the gateway may renew between the read and the write
                found = await kv.get(activation_id)
                held = {**orjson.loads(found.value or b"{}"), "owner": "thief"}
                held["until"] = time.time() + hold_s
                try:
                    await kv.update(activation_id, orjson.dumps(held), last=found.revision)
                    return
                except nats.js.errors.KeyWrongLastSequenceError:
                    continue
            raise AssertionError("the hold kept changing")
        finally:
            await nc.close()

    asyncio.run(go())


def test_a_gateway_whose_hold_was_taken_stops_its_run(
    split: SplitPlatform, nats_server: EmbeddedNats
) -> None:
    """Another gateway takes the hold over while this one still runs the sequence (this one
    lost the bus for longer than the hold, say): this gateway's next renewal fails, it stops
    its run without writing the sequence's end or dropping the other's hold, and once that
    hold runs out unrenewed (the thief here never renews) it resumes the sequence and ends it,
    each component run once."""
    with _gateway(split, "gateway1") as gateway:
        _chain(gateway, "rt", ["inc", "slow", "inc"])
        seq = gateway.post(f"{NS}/actions/rt-chain", json={"n": 1}).json()["activationId"]
        ids = [component_id(seq, i) for i in range(3)]
        wait_for(lambda: (_record(gateway, ids[1]) or {}).get("status") == "running", timeout=60)
        _steal(nats_server.admin_url, seq, hold_s=4)
        wait_for(lambda: (_record(gateway, seq) or {}).get("status") == "success", timeout=90)
        record = _record(gateway, seq)
        assert record is not None and record["result"] == {"n": 5}
        for component in ids:
            done = _record(gateway, component)
            assert done is not None and done["status"] == "success" and done["attempts"] == 1
        log = split.parts["gateway1"].log.read_text()
        assert "another gateway took it over" in log and "resuming sequence" in log


def test_a_run_whose_hold_was_taken_before_its_end_writes_no_end(
    split: SplitPlatform, nats_server: EmbeddedNats
) -> None:
    """The hold changes hands after this gateway's last renewal and before its sequence ends
    (a long hold, renewed every 20 s, and a 3 s component): the run checks its hold before
    writing the end, finds it taken, writes nothing and leaves the other's hold alone. The
    sequence ends only when this gateway, finding that hold run out, resumes it."""
    with _gateway(split, "gateway1", hold_s=60) as gateway:
        _chain(gateway, "re", ["inc", "slow"], slow=SLOW.replace("sleep(10)", "sleep(3)"))
        seq = gateway.post(f"{NS}/actions/re-chain", json={"n": 1}).json()["activationId"]
        ids = [component_id(seq, i) for i in range(2)]
        wait_for(lambda: (_record(gateway, ids[1]) or {}).get("status") == "running", timeout=60)
        _steal(nats_server.admin_url, seq, hold_s=15)
        wait_for(lambda: (_record(gateway, ids[1]) or {}).get("status") == "success", timeout=60)
        wait_for(lambda: "another gateway took it over" in split.parts["gateway1"].log.read_text())
        assert (_record(gateway, seq) or {}).get("status") == "running"  # no end written
        assert _holder(nats_server.admin_url, seq) == "thief"  # and its hold left alone
        wait_for(lambda: (_record(gateway, seq) or {}).get("status") == "success", timeout=90)
        assert (_record(gateway, seq) or {}).get("result") == {"n": 4}


def _holder(nats_url: str, activation_id: str) -> str | None:
    async def go() -> str | None:
        nc = await nats.connect(nats_url)
        try:
            kv = await nc.jetstream().key_value(SEQUENCES_KV)
            found = await kv.get(activation_id)
            return str(orjson.loads(found.value or b"{}").get("owner"))
        except nats.js.errors.KeyNotFoundError:
            return None
        finally:
            await nc.close()

    return asyncio.run(go())
