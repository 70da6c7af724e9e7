"""`deepfaas up` killed with SIGKILL takes its embedded nats-server with it, and starts again.

Before, the nats-server that `up` starts (its own, `make run`'s default) outlived an `up`
killed by SIGKILL and held its port, so the next `make run` stopped at "port 4222 is in use".
"""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

import psutil

from tests.support import embedded_nats, start_platform


def test_a_killed_up_takes_its_nats_server_and_starts_again(tmp_path: Path) -> None:
    nats = embedded_nats(tmp_path)
    first = start_platform(nats, tmp_path)
    try:
        servers = [
            p for p in psutil.Process(first.process.pid).children() if p.name() == "nats-server"
        ]
        assert len(servers) == 1
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(10)
        servers[0].wait(15)  # psutil.TimeoutExpired if it outlives `up`
    finally:
        first.stop()
    again = start_platform(dataclasses.replace(nats), tmp_path)  # the same port and data
    try:
        with again.client() as client:
            assert client.get("/readyz").status_code == 200
    finally:
        again.stop()
