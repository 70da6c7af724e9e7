"""The event stream as clients use it: events posted with the real CloudEvents client
(`cloudevents` 2.2), read as server-sent events and with `deepfaas events tail`, on the
platform as `deepfaas up` runs it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cloudevents.core.bindings import http as sdk_http
from cloudevents.core.v1.event import CloudEvent as SdkEvent

from eventbus.server import EmbeddedNats
from tests.support import Platform, start_platform, wait_for

TAG = uuid.uuid4().hex[:6]
ROOT = Path(__file__).resolve().parents[2]


def post(
    c: httpx.Client,
    event_type: str,
    data: Any = None,
    *,
    event_id: str | None = None,
    structured: bool = False,
    **extra: str,
) -> httpx.Response:
    """Post one event encoded by the CloudEvents SDK (binary mode unless ``structured``)."""
    attributes = {
        "type": event_type,
        "source": "/e2e/stream",
        "id": event_id or uuid.uuid4().hex,
        "datacontenttype": "application/json",
        **extra,
    }
    event = SdkEvent(attributes=attributes, data=data if data is not None else {})
    encode = sdk_http.to_structured_event if structured else sdk_http.to_binary_event
    message = encode(event)
    return c.post("/v1/events", content=message.body, headers=message.headers)


def posted(c: httpx.Client, event_type: str, event_id: str, **extra: str) -> int:
    """Post an event that must be accepted; its stream sequence."""
    r = post(c, event_type, {"id": event_id}, event_id=event_id, **extra)
    assert r.status_code == 202, r.text
    seq: int = r.json()["stream_seq"]
    return seq


def frames(response: httpx.Response) -> Iterator[dict[str, str]]:
    """The server-sent events of a response as field dicts (comments left out)."""
    frame: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if frame:
                yield frame
            frame = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            frame[name] = value.removeprefix(" ")


def read_until(stream: Iterator[dict[str, str]], last_id: str) -> list[dict[str, str]]:
    """Event frames up to and including the one of the CloudEvent ``last_id``."""
    got = []
    for frame in stream:
        if "data" in frame:
            got.append(frame)
            if orjson.loads(frame["data"])["id"] == last_id:
                return got
    raise AssertionError(f"the stream ended before {last_id}: {got}")


def ids(got: list[dict[str, str]]) -> list[str]:
    return [orjson.loads(f["data"])["id"] for f in got]


def open_stream(c: httpx.Client, **params: str) -> Any:
    headers = {}
    if "last_event_id" in params:
        headers["last-event-id"] = params.pop("last_event_id")
    return c.stream("GET", "/v1/events/stream", params=params, headers=headers)


@pytest.fixture(scope="module")
def tenant_key(platform: Platform) -> str:
    with platform.client() as admin:
        r = admin.post("/v1/auth/keys", json={"namespace": "stream-b"})
        assert r.status_code == 201, r.text
        key: str = r.json()["key"]
        return key


@pytest.fixture
def tenant(platform: Platform, tenant_key: str) -> Iterator[httpx.Client]:
    with platform.client(auth=tenant_key) as c:
        yield c


def test_an_event_posted_twice_with_one_id_is_streamed_once(client: httpx.Client) -> None:
    event_type = f"com.example.dup.{TAG}"
    with open_stream(client, type=event_type) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = frames(response)
        start = next(stream)  # no event yet: the sequence to resume from
        assert "data" not in start and int(start["id"]) >= 0
        seq = posted(client, event_type, f"dup-{TAG}")
        again = post(client, event_type, {"id": "again"}, event_id=f"dup-{TAG}")
        assert again.status_code == 202 and again.json()["duplicate"] is True
        end_seq = posted(client, event_type, f"end-{TAG}")
        got = read_until(stream, f"end-{TAG}")
    assert ids(got) == [f"dup-{TAG}", f"end-{TAG}"]
    assert [f["id"] for f in got] == [str(seq), str(end_seq)]
    assert [f["event"] for f in got] == [event_type, event_type]
    first = orjson.loads(got[0]["data"])
    assert first["data"] == {"id": f"dup-{TAG}"} and first["namespace"] == "default"


def test_a_client_resumes_with_last_event_id_and_misses_nothing(client: httpx.Client) -> None:
    event_type = f"com.example.resume.{TAG}"
    names = [f"r{i}-{TAG}" for i in range(30)]
    with open_stream(client, type=event_type) as response:
        stream = frames(response)
        next(stream)
        for name in names[:5]:
            posted(client, event_type, name)
        seen = read_until(stream, names[2])
    # disconnected: events stored meanwhile are read on resuming
    for name in names[5:10]:
        posted(client, event_type, name)
    # ... and so are those posted while the client reconnects
    poster = threading.Thread(
        target=lambda: [posted(client, event_type, name) for name in names[10:]]
    )
    poster.start()
    try:
        with open_stream(client, type=event_type, last_event_id=seen[-1]["id"]) as response:
            stream = frames(response)
            assert next(stream) == {"id": seen[-1]["id"]}
            rest = read_until(stream, names[-1])
    finally:
        poster.join()
    assert ids(seen) + ids(rest) == names
    seqs = [int(f["id"]) for f in seen + rest]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(names)


def test_since_starts_from_a_time_and_last_event_id_wins(client: httpx.Client) -> None:
    event_type = f"com.example.since.{TAG}"
    before = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    seqs = [posted(client, event_type, f"s{i}-{TAG}") for i in range(3)]
    with open_stream(client, type=event_type, since=before) as response:
        # a start from a time names no sequence: the first frame is the first event
        got = read_until(frames(response), f"s2-{TAG}")
    assert ids(got) == [f"s{i}-{TAG}" for i in range(3)]
    assert [int(f["id"]) for f in got] == seqs
    with open_stream(client, type=event_type, since=before, last_event_id=str(seqs[0])) as response:
        assert ids(read_until(frames(response), f"s2-{TAG}")) == [f"s1-{TAG}", f"s2-{TAG}"]


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ({"since": "yesterday"}, {}),
        ({"since": "9999-12-31T23:59:59-14:00"}, {}),
        ({}, {"last-event-id": "abc"}),
        ({}, {"last-event-id": "-1"}),
    ],
    ids=["since", "since-out-of-range", "last-event-id", "negative-last-event-id"],
)
def test_a_bad_start_is_a_problem(
    client: httpx.Client, params: dict[str, str], headers: dict[str, str]
) -> None:
    r = client.get("/v1/events/stream", params=params, headers=headers)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("structured", [False, True], ids=["binary-mode", "structured-mode"])
def test_data_that_is_not_the_json_it_claims_is_refused(
    client: httpx.Client, structured: bool
) -> None:
    attributes = {
        "type": f"com.example.badjson.{TAG}",
        "source": "/e2e/stream",
        "id": uuid.uuid4().hex,
        "datacontenttype": "application/json",
    }
    encode = sdk_http.to_structured_event if structured else sdk_http.to_binary_event
    message = encode(SdkEvent(attributes=attributes, data=b"{not json"))
    r = client.post("/v1/events", content=message.body, headers=message.headers)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert "not valid JSON" in r.json()["detail"]
    if structured:  # and an envelope that is not JSON at all
        good = sdk_http.to_structured_event(SdkEvent(attributes=attributes, data={"a": 1}))
        r = client.post("/v1/events", content=good.body[:-5], headers=good.headers)
        assert r.status_code == 400, r.text
        assert r.headers["content-type"] == "application/problem+json"


def test_another_namespace_sees_none_of_the_events(
    client: httpx.Client, tenant: httpx.Client
) -> None:
    event_type = f"com.example.ns.{TAG}"
    before = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    # default's event claiming to be stream-b's is still default's
    posted(client, event_type, f"a0-{TAG}", namespace="stream-b")
    posted(tenant, event_type, f"b0-{TAG}")
    posted(client, event_type, f"a1-{TAG}")
    posted(tenant, event_type, f"b1-{TAG}")
    with open_stream(tenant, type=event_type, since=before) as response:
        got = read_until(frames(response), f"b1-{TAG}")
    assert ids(got) == [f"b0-{TAG}", f"b1-{TAG}"]
    assert {orjson.loads(f["data"])["namespace"] for f in got} == {"stream-b"}
    # a resume from the very start replays through the same rule
    with open_stream(tenant, type=event_type, last_event_id="0") as response:
        assert ids(read_until(frames(response), f"b1-{TAG}")) == [f"b0-{TAG}", f"b1-{TAG}"]
    with open_stream(client, type=event_type, since=before) as response:
        assert ids(read_until(frames(response), f"a1-{TAG}")) == [f"a0-{TAG}", f"a1-{TAG}"]


@pytest.mark.parametrize("flag", [[], ["--json"]], ids=["piped", "json"])
def test_events_tail_prints_one_json_event_per_line(
    platform: Platform, client: httpx.Client, flag: list[str]
) -> None:
    event_type = f"com.example.tail.{TAG}.{len(flag)}"
    before = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    names = [f"t{i}-{TAG}-{len(flag)}" for i in range(3)]
    long = "x" * 300  # far past 80 columns
    for name in names:
        r = post(client, event_type, {"text": long, "name": name}, event_id=name)
        assert r.status_code == 202, r.text
    command = [sys.executable, "-m", "cli", "events", "tail", "--url", platform.url]
    command += ["--type", event_type, "--since", before, "-n", "3", *flag]
    env = {**os.environ, "DEEPFAAS_AUTH": platform.auth, "COLUMNS": "80"}
    try:
        done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, timeout=30)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{exc.stdout!r} {exc.stderr!r}\n{platform.log_text()}") from exc
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 3, done.stdout
    events = [orjson.loads(line) for line in lines]
    assert [e["id"] for e in events] == names
    assert all(e["data"]["text"] == long and e["type"] == event_type for e in events)


def test_the_platform_stops_on_sigterm_while_clients_follow_the_stream(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    own = start_platform(nats_server, tmp_path / "stopping")
    event_type = f"com.example.stop.{TAG}"
    command = [sys.executable, "-m", "cli", "events", "tail", "--url", own.url]
    tail = subprocess.Popen(
        [*command, "--type", event_type, "--json"],
        env={**os.environ, "DEEPFAAS_AUTH": own.auth},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    shown: list[bytes] = []
    assert tail.stdout is not None
    reader = threading.Thread(target=lambda: shown.extend(tail.stdout or ()), daemon=True)
    reader.start()
    try:
        with own.client(timeout=30) as c, open_stream(c) as response:
            lines = response.iter_lines()
            assert next(lines) == ": subscribed"

            def tail_follows() -> bool:  # post until `events tail` shows one (it is connected)
                posted(c, event_type, uuid.uuid4().hex)
                return bool(shown)

            wait_for(tail_follows, timeout=30, interval=0.3)
            began = time.monotonic()
            own.process.send_signal(signal.SIGTERM)
            # the server ends the response (or, past its grace time, the connection): no
            # client timeout is involved
            with contextlib.suppress(httpx.RemoteProtocolError):
                for _ in lines:
                    pass
            assert time.monotonic() - began < 10
        own.process.wait(15)
        assert time.monotonic() - began < 15
        tail.wait(10)
        reader.join(5)
        assert tail.stderr is not None
        stderr = tail.stderr.read()
        assert tail.returncode in (0, 1) and b"resume with --after " in stderr, stderr
    finally:
        tail.kill()
        tail.wait(5)
        for pipe in (tail.stdout, tail.stderr):
            if pipe is not None:
                pipe.close()
        own.stop()


def test_a_sequence_past_the_last_resumes_from_now(client: httpx.Client) -> None:
    event_type = f"com.example.past.{TAG}"
    with open_stream(client, type=event_type, last_event_id=str(2**70)) as response:
        stream = frames(response)
        start = int(next(stream)["id"])  # the sequence it really starts after
        assert start < 2**63
        seq = posted(client, event_type, f"p0-{TAG}")
        [got] = read_until(stream, f"p0-{TAG}")
    assert int(got["id"]) == seq > start
    with open_stream(client, type=event_type, since="1970-01-01T00:00:00Z") as response:
        assert ids(read_until(frames(response), f"p0-{TAG}")) == [f"p0-{TAG}"]
