"""Single-user mode is explicit: `DEEPFAAS_SANDBOX=off` warns, runs code in the worker, and is
refused as soon as a second namespace has keys. Real nats-server and `deepfaas up`."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventbus.server import EmbeddedNats
from tests.support import start_platform

WHERE = "import os\ndef main(args):\n    return {'in_worker': 'DEEPFAAS_DATA_DIR' in os.environ}\n"


def test_off_warns_runs_in_process_and_refuses_a_second_namespace(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    platform = start_platform(nats_server, tmp_path / "p", sandbox="off")
    try:
        assert "DEEPFAAS_SANDBOX=off" in platform.log_text()
        with platform.client() as c:
            assert c.put("/v1/functions/where", json={"handler": "main", "code": WHERE}).is_success
            r = c.post("/v1/functions/where/invoke", json={})
            assert r.status_code == 200 and r.json() == {"in_worker": True}, r.text
            refused = c.post("/v1/auth/keys", json={"namespace": "tenant-b"})
            assert refused.status_code == 409, refused.text
            assert "sandbox is off" in refused.json()["detail"]
            # More keys of the one namespace are fine.
            assert c.post("/v1/auth/keys", json={}).status_code == 201
    finally:
        platform.stop()


def test_on_by_default_and_off_refused_at_start_with_two_namespaces(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    data = tmp_path / "shared"
    platform = start_platform(nats_server, data)
    try:
        with platform.client() as c:
            assert c.put("/v1/functions/where", json={"handler": "main", "code": WHERE}).is_success
            assert c.post("/v1/functions/where/invoke", json={}).json() == {"in_worker": False}
            assert c.post("/v1/auth/keys", json={"namespace": "tenant-b"}).status_code == 201
    finally:
        platform.stop()
    with pytest.raises(RuntimeError, match="DEEPFAAS_SANDBOX=off is refused"):
        start_platform(nats_server, data, sandbox="off")
