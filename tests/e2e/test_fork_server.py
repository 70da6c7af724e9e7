"""Cold starts through the fork server on the real platform (no prewarmed pool): a function
answers from a forked worker, and a kill -9 of the fork server costs no call."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from eventbus.server import EmbeddedNats
from tests.support import Platform, instances, start_platform, wait_for

ECHO = "def main(params):\n    return params\n"


@pytest.fixture(scope="module")
def platform(
    nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    started = start_platform(nats_server, Path(tmp_path_factory.mktemp("forks")), prewarm=0)
    yield started
    started.stop()


def fork_servers(platform: Platform) -> list[int]:
    """Pids of the platform's fork servers (children of `deepfaas up` running the zygote)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if b"runtimes.worker.zygote" in argv and parent == platform.process.pid:
            found.append(int(proc.name))
    return found


def ready_servers(platform: Platform) -> list[int]:
    """Fork servers that said they are ready in their log (imports done)."""
    text = "".join(p.read_text() for p in platform.data_dir.rglob("fork-server.log"))
    return [pid for pid in fork_servers(platform) if f"fork server {pid} ready" in text]


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def deploy_and_call(client: httpx.Client, name: str, value: int) -> int:
    """Deploy ``name`` scaled from zero, call it, return its worker's pid."""
    client.put(f"/v1/functions/{name}", json={"handler": "main", "code": ECHO}).raise_for_status()
    reply = client.post(f"/v1/functions/{name}/invoke", json={"x": value}, timeout=60)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"x": value}
    [instance] = instances(client, name)
    return int(instance["pid"])


def test_a_function_answers_from_a_forked_worker_and_outlives_its_fork_server(
    client: httpx.Client, platform: Platform
) -> None:
    [server] = wait_for(lambda: ready_servers(platform), 90)
    # the first call of a function with no worker: the worker is forked, not spawned
    worker = deploy_and_call(client, "forked-echo", 1)
    assert parent_of(worker) == server

    os.kill(server, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{server}").exists() or server not in fork_servers(platform))
    # its worker keeps serving, and a new function still starts (spawned, or forked again)
    reply = client.post("/v1/functions/forked-echo/invoke", json={"x": 2}, timeout=60)
    assert reply.status_code == 200 and reply.json() == {"x": 2}, reply.text
    deploy_and_call(client, "after-kill", 3)
    [replacement] = wait_for(lambda: [p for p in ready_servers(platform) if p != server], 90)
    worker = deploy_and_call(client, "forked-again", 4)
    assert parent_of(worker) == replacement
