"""Scheduled triggers on a running platform (`deepfaas up` plus a second dispatcher process),
with the schedulers' clock read from a file the test advances; and OpenWhisk's alarms feed
driven by the official npm client."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventbus.server import EmbeddedNats
from gateway.openwhisk.alarms import schedule_of
from gateway.openwhisk.errors import BadRequestError
from tests.e2e.test_invoke import deploy
from tests.e2e.test_openwhisk_client import HERE, npm_ci
from tests.support import Platform, start_platform, wait_for

TENANT = "sched-tenant"
ECHO = """
def main(params):
    return {"tick": params.get("tick"), "model": params.get("model"), "hello": params.get("hello")}
"""


class FakeClock:
    """The file both dispatchers read the time from."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.now = datetime.now(UTC).replace(microsecond=250_000) - timedelta(seconds=30)
        self._write()

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        self._write()
        return self.now

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(self.now.isoformat())
        tmp.replace(self.path)


@pytest.fixture(scope="module")
def clock(tmp_path_factory: pytest.TempPathFactory) -> FakeClock:
    return FakeClock(Path(tmp_path_factory.mktemp("clock")) / "now")


@pytest.fixture(scope="module")
def platform(
    nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory, clock: FakeClock
) -> Iterator[Platform]:
    settings = {"schedule_clock": f"file:{clock.path}", "schedule_grace_s": "0.5"}
    started = start_platform(nats_server, Path(tmp_path_factory.mktemp("platform")), **settings)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def second_dispatcher(platform: Platform, clock: FakeClock) -> Iterator[subprocess.Popen[bytes]]:
    """A dispatcher of its own (as split mode runs one), beside the one inside `up`."""
    env = {
        **os.environ,
        "DEEPFAAS_NATS_URL": platform.nats.url,
        "DEEPFAAS_NATS_CREDENTIALS_DIR": str(platform.nats.credentials_dir),
        "DEEPFAAS_SCHEDULE_CLOCK": f"file:{clock.path}",
        "DEEPFAAS_SCHEDULE_GRACE_S": "0.5",
    }
    log = platform.data_dir / "dispatcher2.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", "dispatcher"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    wait_for(lambda: "dispatcher started" in log.read_text(errors="replace"), timeout=60)
    yield process
    process.terminate()
    process.wait(30)


@pytest.fixture(scope="module")
def tenant_key(platform: Platform) -> str:
    with platform.client() as admin:
        r = admin.post("/v1/auth/keys", json={"namespace": TENANT})
    assert r.status_code == 201, r.text
    key: str = r.json()["key"]
    return key


def _problem(r: httpx.Response, status: int, reason: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert reason in r.text, r.text


def _last_tick(client: httpx.Client, name: str) -> str | None:
    """The last tick the schedulers handled, as the API shows it (RFC 3339, `Z`)."""
    last: str | None = client.get(f"/v1/triggers/{name}").json()["last_tick"]
    return last


def _finished(client: httpx.Client, function: str) -> list[dict[str, Any]]:
    found = client.get("/v1/activations", params={"function": function, "limit": 50}).json()
    return [a for a in found if a["status"] not in ("running", "retrying")]


def test_schedules_through_the_api_and_the_cli(client: httpx.Client, platform: Platform) -> None:
    deploy(client, "ticker", ECHO)
    body = {
        "name": "nightly",
        "function": "ticker",
        "params": {"model": "digits"},
        "schedule": {"cron": "0 3 * * *", "timezone": "Europe/Madrid"},
    }
    r = client.post("/v1/triggers", json=body)
    assert r.status_code == 201, r.text
    fires = r.json()["next_fires"]
    assert len(fires) == 5 and all(f[11:19] in ("02:00:00", "01:00:00") for f in fires)
    assert r.json()["schedule"]["catch_up"] == "once"
    assert client.get("/v1/triggers/nightly").json()["next_fires"] == fires
    bad = {**body, "name": "bad"}
    _problem(client.post("/v1/triggers", json={**bad, "schedule": {"cron": "61 * * * *"}}), 422,
             "invalid cron expression")  # fmt: skip
    zone = {"cron": "0 3 * * *", "timezone": "Mars/Olympus"}
    _problem(client.post("/v1/triggers", json={**bad, "schedule": zone}), 422, "unknown time zone")
    _problem(client.post("/v1/triggers", json={**bad, "schedule": {"interval_s": 0}}), 422, "")
    _problem(client.post("/v1/triggers", json={"name": "bad", "function": "ticker"}), 422, "")

    env = {**os.environ, "DEEPFAAS_URL": platform.url, "DEEPFAAS_AUTH": platform.auth}
    args = ["trigger", "create", "cli-nightly", "--function", "ticker", "--cron", "0 3 * * *",
            "--tz", "Europe/Madrid", "-p", "model=digits"]  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "cli", *args], env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [line for line in out.stdout.splitlines() if " UTC " in line]
    assert len(lines) == 5 and all("03:00:00 CE" in line for line in lines), out.stdout
    every = ["trigger", "create", "cli-every", "--function", "ticker", "--every", "10m"]
    out = subprocess.run([sys.executable, "-m", "cli", *every], env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0 and out.stdout.count(" UTC ") == 5, out.stdout + out.stderr
    assert client.get("/v1/triggers/cli-every").json()["schedule"]["interval_s"] == 600
    for name in ("nightly", "cli-nightly", "cli-every"):  # ticks of a fake clock elsewhere
        assert client.delete(f"/v1/triggers/{name}").status_code == 204


def test_every_second_with_two_dispatchers_runs_once_per_tick(
    client: httpx.Client,
    platform: Platform,
    clock: FakeClock,
    second_dispatcher: subprocess.Popen[bytes],
) -> None:
    deploy(client, "ticker", ECHO)
    schedule = {"interval_s": 1, "payload": {"hello": "tick"}}
    body = {"name": "every", "function": "ticker", "params": {"model": "m"}, "schedule": schedule}
    assert client.post("/v1/triggers", json=body).status_code == 201
    n, ticks = 3, []  # the trigger counts from its creation, stamped by the same clock
    for i in range(1, n + 1):
        ticks.append(clock.advance(1).strftime("%Y-%m-%dT%H:%M:%SZ"))
        wait_for(lambda i=i: len(_finished(client, "ticker")) >= i, timeout=90)
    # the pass after the last tick is done: nothing more was claimed, nothing more can run
    wait_for(lambda: _last_tick(client, "every") == ticks[-1], timeout=30)
    assert client.post("/v1/triggers/every/disable").status_code == 200
    found = client.get("/v1/activations", params={"function": "ticker", "limit": 50}).json()
    assert len(found) == n, found
    records = [client.get(f"/v1/activations/{a['id']}").json() for a in found]
    assert sorted(r["result"]["tick"].replace("+00:00", "Z") for r in records) == ticks
    assert all(r["status"] == "success" and r["result"]["model"] == "m" for r in records)
    assert all(r["result"]["hello"] == "tick" for r in records)  # the schedule's payload
    assert second_dispatcher.poll() is None


def test_another_namespace_cannot_see_or_change_the_schedule(
    client: httpx.Client, platform: Platform, tenant_key: str
) -> None:
    deploy(client, "ticker", ECHO)
    body = {"name": "private", "function": "ticker", "schedule": {"cron": "0 3 * * *"}}
    assert client.post("/v1/triggers", json=body).status_code == 201
    with platform.client(auth=tenant_key) as tenant:
        assert "private" not in [t["name"] for t in tenant.get("/v1/triggers").json()]
        assert tenant.get("/v1/triggers/private").status_code == 404
        assert tenant.post("/v1/triggers/private/disable").status_code == 404
        assert tenant.delete("/v1/triggers/private").status_code == 404
        # its own trigger of that name could only name its own functions
        mine = {"function": "ticker", "schedule": body["schedule"]}
        r = tenant.put("/v1/triggers/private", json=mine)
        _problem(r, 422, "does not exist")
    assert client.get("/v1/triggers/private").json()["enabled"] is True
    assert client.delete("/v1/triggers/private").status_code == 204


def test_openwhisk_alarms_feed_with_the_npm_client(platform: Platform, clock: FakeClock) -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed: cannot run the official OpenWhisk JS client")
    npm_ci()
    env = {
        **os.environ,
        "OW_APIHOST": platform.url,
        "OW_AUTH": platform.auth,
        "OW_CLOCK_FILE": str(clock.path),
    }
    result = subprocess.run(
        ["node", "alarms.js"], cwd=HERE, env=env, capture_output=True, text=True, timeout=150
    )
    assert result.returncode == 0, result.stdout + result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["created"]["response"]["success"] is True
    assert len(found["created"]["response"]["result"]["nextFires"]) == 5
    assert found["read"]["config"]["cron"] == "* * * * *"
    assert found["read"]["config"]["payload"] == {"hello": "alarm"}
    assert found["fired"]["result"] == {"greeting": "alarm", "from": "trigger"}
    assert found["badCron"].startswith("400") and "cron" in found["badCron"]
    assert found["deleted"] is True and found["readAfterDelete"].startswith("404")
    assert found["otherNamespace"].startswith("403")
    assert found["feedAnnotations"] == [{"key": "feed", "value": "/whisk.system/alarms/alarm"}]
    assert found["feedDelete"].startswith("403")


def test_interval_and_once_feeds_make_the_schedules_openwhisk_describes() -> None:
    now = datetime(2026, 11, 28, 6, 0, 30, tzinfo=UTC)
    every = schedule_of("interval", {"minutes": 10}, now)  # no startDate: from now on
    assert [t.isoformat() for t in every.upcoming(now, 2)] == [
        "2026-11-28T06:10:30+00:00",
        "2026-11-28T06:20:30+00:00",
    ]
    started = schedule_of("interval", {"minutes": 5, "startDate": "2026-11-28T07:00:00Z"}, now)
    assert started.upcoming(now, 1)[0].isoformat() == "2026-11-28T07:00:00+00:00"
    once = schedule_of("once", {"date": "2026-11-29T00:00:00Z", "trigger_payload": '{"a": 1}'}, now)
    assert [t.isoformat() for t in once.upcoming(now)] == ["2026-11-29T00:00:00+00:00"]
    assert once.payload == {"a": 1}
    for feed, params, reason in [
        ("interval", {"minutes": 0}, "minutes"),
        ("once", {"date": "2020-01-01T00:00:00Z"}, "in the past"),
        ("alarm", {}, "needs `cron`"),
        ("alarm", {"cron": "* * * * *", "timezone": "Nowhere/Land"}, "unknown time zone"),
        ("alarm", {"cron": "* * * * *", "stopDate": "not a date"}, "not a date"),
    ]:
        with pytest.raises(BadRequestError, match=reason):
            schedule_of(feed, params, now)
