"""Every component twice on one bus (split mode, one command each), one of each killed mid-load.

Two gateways, two controllers, two dispatchers and two deliverers run as separate processes
against one real nats-server, as `deepfaas gateway|controller|dispatcher|deliverer` start
them. While async invocations and triggering events arrive through both gateways, one of each
is killed with SIGKILL (the controller killed is the leader): every accepted invocation runs
exactly once (RECORDING leaves one object per run), every event reaches the NATS sink, only
one controller ever has workers, and the gateways' metrics add up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson
import psutil
import pytest

from eventbus.server import EmbeddedNats, free_port
from runtimes.control.leader import LeaseRecord
from tests.e2e.functions import RECORDING
from tests.e2e.test_faults import recorded
from tests.support import wait_for

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "runs-replicas"
EVENT_TYPE = "com.example.replicas"
SINK = "replicas.sink"
ASYNC, EVENTS, AFTER = 40, 16, 10  # invocations, events, the metrics check's invocations


@dataclass
class Part:
    """One split-mode process."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def tail(self) -> str:
        return f"--- {self.name}\n" + self.log.read_text(errors="replace")[-3000:]


@dataclass
class SplitPlatform:
    """Processes started by `start`, and what a test needs to reach them."""

    nats: EmbeddedNats
    base: Path
    auth: str = ""
    parts: dict[str, Part] = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "DEEPFAAS_NATS_URL": self.nats.url,
            "DEEPFAAS_NATS_CREDENTIALS_DIR": str(self.nats.credentials_dir),
            "DEEPFAAS_DATA_DIR": str(self.base / "data"),
            "DEEPFAAS_ACK_WAIT_S": "2",
            "DEEPFAAS_RETRY_BASE_S": "0.2",
            "DEEPFAAS_RETRY_MAX_S": "1",
            "DEEPFAAS_LEADER_TTL_S": "3",
            "DEEPFAAS_IDLE_RELEASE_S": "60",
            "DEEPFAAS_BUILTINS": "",
            "PYTHONUNBUFFERED": "1",
            **extra,
        }

    def start(self, name: str, command: str, **extra: str) -> Part:
        port = free_port() if command == "gateway" else 0
        if port:
            extra["DEEPFAAS_PORT"] = str(port)
        log = self.base / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "cli", command],
                env=self.env(**extra),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
            )
        part = self.parts[name] = Part(name, process, log, port)
        return part

    def bootstrap(self) -> bytes:
        """`deepfaas bootstrap` (the streams and the first key, as `up` makes them); keeps the
        key in ``auth`` and returns what the command printed."""
        boot = subprocess.run(
            [sys.executable, "-m", "cli", "bootstrap"],
            env=self.env(),
            capture_output=True,
            cwd=ROOT,
            timeout=60,
        )
        assert boot.returncode == 0, boot.stdout + boot.stderr
        self.auth = (self.base / "data" / "auth").read_text().strip()
        return boot.stdout

    def client(self, part: Part) -> httpx.Client:
        key, _, secret = self.auth.partition(":")
        return httpx.Client(base_url=part.url, timeout=30, auth=(key, secret))

    def logs(self) -> str:
        return "\n".join(p.tail() for p in self.parts.values())

    @contextlib.contextmanager
    def serving(self) -> Iterator[SplitPlatform]:
        """This platform, its logs printed if what runs inside fails; stopped after."""
        try:
            yield self
        except BaseException:
            print(self.logs())
            raise
        finally:
            self.stop()

    def stop(self) -> None:
        for part in self.parts.values():
            if part.process.poll() is None:
                part.process.terminate()
        for part in self.parts.values():
            try:
                part.process.wait(20)
            except subprocess.TimeoutExpired:
                # reaped, or its Popen warns as "still running" in whatever test runs next
                print(f"{part.name} did not stop within 20 s of SIGTERM; killed", flush=True)
                part.process.kill()
                part.process.wait(10)


def _ready(part: Part) -> bool:
    if part.process.poll() is not None:
        raise AssertionError(f"{part.name} exited with {part.process.returncode}:\n{part.tail()}")
    try:
        return httpx.get(f"{part.url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def split(nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    platform = SplitPlatform(nats_server, tmp_path_factory.mktemp("split"))
    printed = platform.bootstrap()
    assert platform.auth.encode() in printed  # printed once, as `up` does
    for i in (1, 2):
        platform.start(f"gateway{i}", "gateway")
        platform.start(
            f"controller{i}", "controller", DEEPFAAS_STATE_DIR=str(platform.base / f"c{i}")
        )
        platform.start(f"dispatcher{i}", "dispatcher")
        platform.start(f"deliverer{i}", "deliverer")
    with platform.serving():
        for i in (1, 2):
            # generous: eight processes start at once on a shared 2-core machine
            wait_for(lambda i=i: _ready(platform.parts[f"gateway{i}"]), timeout=180)
        yield platform


def _leader(nats_server: EmbeddedNats) -> str | None:
    async def read() -> str | None:
        nc = await nats.connect(nats_server.admin_url)
        try:
            kv = await nc.jetstream().key_value("leases")
            entry = await kv.get("controller")
            record = LeaseRecord.parse(entry.value)
            return record.holder if record and record.expires > time.time() else None
        except nats.js.errors.KeyNotFoundError:
            return None
        finally:
            await nc.close()

    return asyncio.run(read())


def _runtimes_answers(nats_server: EmbeddedNats) -> int:
    """How many controllers answer `control.runtimes` (a request that each listener answers)."""

    async def count() -> int:
        nc = await nats.connect(nats_server.admin_url)
        answers: list[bytes] = []

        async def answered(msg: Any) -> None:
            answers.append(msg.data)

        try:
            inbox = nc.new_inbox()
            await nc.subscribe(inbox, cb=answered)
            await nc.publish("control.runtimes", b"", reply=inbox)
            await asyncio.sleep(1.0)
        finally:
            await nc.close()
        return len(answers)

    return asyncio.run(count())


def _is_worker(process: psutil.Process) -> bool:
    """A spawned worker (`python -m runtimes`), or one forked by the fork server (it keeps
    the server's command line and is the server's child)."""
    command = process.cmdline()
    if command[-2:] == ["-m", "runtimes"]:
        return True
    parent = process.parent()
    return (
        "runtimes.worker.zygote" in command
        and parent is not None
        and "runtimes.worker.zygote" in parent.cmdline()
    )


class WorkerCensus(threading.Thread):
    """Samples, until stopped, how many worker processes each live controller has started."""

    def __init__(self, controllers: dict[str, Part]) -> None:
        super().__init__(daemon=True)
        self.controllers = controllers
        self.samples: list[dict[str, int]] = []
        self.done = threading.Event()

    def count(self) -> dict[str, int]:
        counts = {}
        for name, part in self.controllers.items():
            try:
                below = psutil.Process(part.process.pid).children(recursive=True)
                counts[name] = sum(1 for c in below if _is_worker(c))
            except psutil.Error:  # gone (killed): it has no workers of its own any more
                counts[name] = 0
        return counts

    def run(self) -> None:
        while not self.done.is_set():
            self.samples.append(self.count())
            self.done.wait(0.1)


def _metric(text: str, family: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(f"{family}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _metrics(split: SplitPlatform, gateways: list[Part]) -> tuple[float, float]:
    """(accepted, completed) invocations of `recorder`, summed over ``gateways``' /metrics."""
    accepted = completed = 0.0
    for gateway in gateways:
        with split.client(gateway) as client:
            text = client.get("/metrics").text
        accepted += _metric(text, "deepfaas_invocations_accepted_total", function="recorder")
        completed += _metric(text, "deepfaas_invocations_total", function="recorder")
    return accepted, completed


def _settled(split: SplitPlatform, gateways: list[Part]) -> tuple[float, float]:
    """`_metrics` once two reads 1.5 s apart agree."""

    def steady() -> tuple[float, float] | None:
        first = _metrics(split, gateways)
        time.sleep(1.5)
        return first if _metrics(split, gateways) == first else None

    return wait_for(steady, timeout=30)


def test_each_part_twice_survives_losing_one_of_each(
    split: SplitPlatform, nats_server: EmbeddedNats
) -> None:
    g1, g2 = split.parts["gateway1"], split.parts["gateway2"]
    with split.client(g1) as client:
        r = client.put(
            "/v1/functions/recorder",
            json={"handler": "main", "code": RECORDING, "max_scale": 2, "concurrency": 8},
        )
        assert r.status_code in (200, 201), r.text
        assert client.put(f"/v1/buckets/{BUCKET}").status_code in (200, 201)
        trigger = {"name": "t-replicas", "function": "recorder", "event_types": [EVENT_TYPE]}
        assert client.post("/v1/triggers", json=trigger).status_code == 201
        sub = {"sink": f"nats:{SINK}", "types": [EVENT_TYPE]}
        assert client.post("/v1/subscriptions", json=sub).status_code == 201

    leader = wait_for(lambda: _leader(nats_server), timeout=60)
    controllers = {n: p for n, p in split.parts.items() if n.startswith("controller")}
    [lead] = [n for n, p in controllers.items() if f":{p.process.pid}:" in leader]
    census = WorkerCensus(controllers)
    census.start()
    assert _runtimes_answers(nats_server) == 1  # the standby answers nothing

    sink_ids: set[str] = set()
    sink_ready = threading.Event()

    async def listen(stop: threading.Event) -> None:
        nc = await nats.connect(nats_server.admin_url)

        async def got(msg: Any) -> None:
            sink_ids.add(msg.headers["ce-id"])

        await nc.subscribe(SINK, cb=got)
        await nc.flush()  # the server has the subscription
        sink_ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await nc.close()

    stop_sink = threading.Event()
    sink_thread = threading.Thread(target=asyncio.run, args=(listen(stop_sink),), daemon=True)
    sink_thread.start()
    assert sink_ready.wait(30)  # the sink's subscription is in place before the first event

    accepted: dict[str, str] = {}  # tag -> activation id or event id
    lock = threading.Lock()
    turn = itertools.count()

    def send(tag: str) -> None:
        for _ in range(20):  # a gateway that died answers nothing: the client tries the other
            gateway = g1 if next(turn) % 2 and g1.process.poll() is None else g2
            try:
                with split.client(gateway) as client:
                    if tag.startswith("a"):
                        r = client.post(
                            "/v1/functions/recorder/invoke",
                            params={"async": "true"},
                            json={"tag": tag, "bucket": BUCKET, "s": 0.3},
                        )
                        key = "activation_id"
                    else:
                        headers = {
                            "ce-specversion": "1.0", "ce-id": f"ev-{tag}", "ce-source": "/e2e",
                            "ce-type": EVENT_TYPE, "content-type": "application/json",
                        }  # fmt: skip
                        body = orjson.dumps({"tag": tag, "bucket": BUCKET})
                        r = client.post("/v1/events", content=body, headers=headers)
                        key = "id"
                if r.status_code == 202:
                    with lock:
                        accepted[tag] = r.json().get(key, f"ev-{tag}")
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)

    tags = [f"a{i}" for i in range(ASYNC)] + [f"e{i}" for i in range(EVENTS)]
    tags.sort(key=lambda t: int(t[1:]))  # interleaved: invocations and events together
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(send, tag) for tag in tags]
        wait_for(lambda: len(accepted) >= len(tags) // 3, timeout=60)
        # mid-load: one of each, the controller that leads
        killed_at = len(census.samples)
        for name in ("gateway1", lead, "dispatcher1", "deliverer1"):
            split.parts[name].kill()
        for future in futures:
            future.result()
    assert len(accepted) == len(tags), sorted(set(tags) - set(accepted))

    # every accepted invocation and event ran exactly once (one object per run)
    with split.client(g2) as client:
        want = sorted(tags)
        wait_for(lambda: len(recorded(client, BUCKET)) >= len(want), timeout=120)
        assert recorded(client, BUCKET) == want
    wait_for(lambda: {f"ev-e{i}" for i in range(EVENTS)} <= sink_ids, timeout=60)
    stop_sink.set()

    # the standby took over; never did both controllers have workers at the same time
    survivor = next(n for n in controllers if n != lead)
    assert f":{controllers[survivor].process.pid}:" in wait_for(
        lambda: _leader(nats_server), timeout=30
    )
    census.done.set()
    census.join(5)
    assert not [s for s in census.samples if s[lead] and s[survivor]], census.samples
    before_kill = census.samples[:killed_at]
    assert any(s[lead] for s in before_kill) and all(s[survivor] == 0 for s in before_kill)
    assert census.samples[-1][survivor] >= 1
    assert _runtimes_answers(nats_server) == 1

    # a new gateway beside the survivor: their metrics add up to what they both served
    g3 = split.start("gateway3", "gateway")
    wait_for(lambda: _ready(g3), timeout=180)
    gateways = [g2, g3]
    # counts reach a gateway up to a second after their activation ends (`runtimes.tally`):
    # the baseline is taken once the earlier ones have all arrived
    accepted_before, completed_before = _settled(split, gateways)
    more = [f"m{i}" for i in range(AFTER)]
    for i, tag in enumerate(more):
        with split.client(gateways[i % 2]) as client:
            r = client.post(
                "/v1/functions/recorder/invoke",
                params={"async": "true"},
                json={"tag": tag, "bucket": BUCKET},
            )
            assert r.status_code == 202, r.text
    want = sorted(tags + more)
    with split.client(g2) as client:
        wait_for(lambda: len(recorded(client, BUCKET)) >= len(want), timeout=60)
        assert recorded(client, BUCKET) == want

    def added_up() -> tuple[float, float] | None:
        accepted_now, completed_now = _metrics(split, gateways)
        delta = (accepted_now - accepted_before, completed_now - completed_before)
        return delta if delta[1] >= AFTER else None

    assert wait_for(added_up, timeout=30) == (AFTER, AFTER)


def _lease_released(nats_server: EmbeddedNats) -> bool:
    """Whether the controller lease was deleted (released), not merely left to lapse."""

    async def read() -> bool:
        nc = await nats.connect(nats_server.admin_url)
        try:
            await (await nc.jetstream().key_value("leases")).get("controller")
            return False
        except nats.js.errors.KeyNotFoundError:
            return True
        finally:
            await nc.close()

    return asyncio.run(read())


def test_a_stopped_controller_hands_its_lease_over_at_once(
    split: SplitPlatform, nats_server: EmbeddedNats
) -> None:
    [survivor] = [
        p for n, p in split.parts.items() if n.startswith("controller") and p.process.poll() is None
    ]
    wait_for(lambda: f":{survivor.process.pid}:" in (_leader(nats_server) or ""), timeout=60)
    workers = WorkerCensus({"c": survivor}).count()["c"]
    survivor.process.terminate()  # SIGTERM, as Kubernetes stops a pod
    assert survivor.process.wait(60) == 0, survivor.tail()
    assert _lease_released(nats_server)
    assert workers >= 1 and "released by" in survivor.log.read_text()


def test_readyz_says_whether_the_bus_answers(
    split: SplitPlatform, nats_server: EmbeddedNats
) -> None:
    gateway = split.parts["gateway2"]

    def readiness() -> tuple[int, dict[str, Any]]:
        r = httpx.get(f"{gateway.url}/readyz", timeout=10)
        return r.status_code, r.json()

    assert readiness()[0] == 200
    nats_server.stop()
    try:
        _, body = wait_for(lambda: (r := readiness())[0] == 503 and r, timeout=60)
        assert body["status"] == "unavailable" and body["nats"] is False
        assert httpx.get(f"{gateway.url}/healthz", timeout=10).status_code == 200  # still alive
    finally:
        nats_server.start()
    wait_for(lambda: readiness()[0] == 200, timeout=60)
