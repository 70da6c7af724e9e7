"""Run the real platform (gateway, controller, workers) against a nats-server: tests and bench."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from eventbus.server import EmbeddedNats, free_port
from tests.support.eventually import wait_for

#: the checkout `start_platform` runs unless told another (``source=``)
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Platform:
    """A `deepfaas up` process using an external nats-server, and an HTTP client to it."""

    url: str
    process: subprocess.Popen[bytes]
    nats: EmbeddedNats
    data_dir: Path
    log_path: Path
    #: the default namespace's `uuid:key`, which `deepfaas up` wrote to `<data_dir>/auth`
    auth: str = ""

    @property
    def basic_auth(self) -> tuple[str, str]:
        key_id, _, secret = self.auth.partition(":")
        return key_id, secret

    @property
    def auth_url(self) -> str:
        """The URL with the default key as its userinfo (httpx and `bench.loadgen` send it)."""
        return self.url.replace("http://", f"http://{self.auth}@", 1)

    def client(self, timeout: float = 30.0, auth: str | None = None) -> httpx.Client:
        """A client sending the default key (or ``auth``, another `uuid:key`)."""
        key_id, _, secret = (auth or self.auth).partition(":")
        return httpx.Client(base_url=self.url, timeout=timeout, auth=(key_id, secret))

    def log_text(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        logs = self.data_dir / "logs"
        if logs.is_dir():
            for path in sorted(logs.iterdir()):
                text += f"\n--- {path.name}\n" + path.read_text(errors="replace")[-4000:]
        return text[-20000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def embedded_nats(data_dir: Path) -> EmbeddedNats:
    """The nats-server that `deepfaas up` with ``data_dir`` starts itself (not started here)."""
    return EmbeddedNats(store_dir=data_dir / "nats", port=free_port())


def start_platform(nats: EmbeddedNats, data_dir: Path, **settings: Any) -> Platform:
    """Start `python -m cli up` with DEEPFAAS_* settings; wait until /readyz says ok.

    With a started ``nats``, `up` uses it as an external server (with its roles' credentials);
    with one from `embedded_nats(data_dir)`, `up` starts it itself, as `make run` does.
    ``source=<dir>`` runs another copy of the code (e.g. `git archive` of an earlier commit).
    """
    source: Path | None = settings.pop("source", None)
    port = free_port()
    if nats.process is None:
        nats_env = {"DEEPFAAS_EMBEDDED_NATS": "true", "DEEPFAAS_NATS_PORT": str(nats.port)}
    else:
        nats_env = {
            "DEEPFAAS_NATS_URL": nats.url,
            # a server deepfaas set up: each part connects with its role's generated credentials
            "DEEPFAAS_NATS_CREDENTIALS_DIR": str(nats.credentials_dir),
            "DEEPFAAS_EMBEDDED_NATS": "false",
        }
    env = {
        **os.environ,
        **nats_env,
        "DEEPFAAS_PORT": str(port),
        "DEEPFAAS_DATA_DIR": str(data_dir),
        "DEEPFAAS_ACK_WAIT_S": "2",
        "DEEPFAAS_RETRY_BASE_S": "0.2",
        "DEEPFAAS_RETRY_MAX_S": "1",
        "DEEPFAAS_IDLE_RELEASE_S": "30",
        # the tests' callback and webhook receivers listen on 127.0.0.1; 127.0.0.2 and the
        # rest of loopback stay refused (tests/e2e/test_egress.py)
        "DEEPFAAS_EGRESS_ALLOW": "127.0.0.1/32",
        "DEEPFAAS_BUILTINS": "",  # tests register what they use; `builtins="inference"` adds
        "PYTHONUNBUFFERED": "1",
    }
    # the fork server's import of the model frameworks (~2 s of CPU) only where models run
    models = {"inference", "retrain"} & set(str(settings.get("builtins", "")).split(","))
    env["DEEPFAAS_PRELOAD_MODELS"] = "true" if models else "false"
    env.update({f"DEEPFAAS_{k.upper()}": str(v) for k, v in settings.items()})
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "platform.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", "up"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=source or ROOT,
        )
    platform = Platform(f"http://127.0.0.1:{port}", process, nats, data_dir, log_path)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"platform exited with {process.returncode}:\n{platform.log_text()}")
        try:
            return httpx.get(f"{platform.url}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, timeout=90)  # a loaded 2-core CI machine can take this long
    except AssertionError:
        platform.stop()
        raise RuntimeError(f"platform not ready in 90 s:\n{platform.log_text()}") from None
    platform.auth = (data_dir / "auth").read_text().strip()
    return platform


def wait_activation(
    client: httpx.Client, activation_id: str, timeout: float = 20.0
) -> dict[str, Any]:
    """Poll an activation until it reaches a final status."""

    def done() -> dict[str, Any] | None:
        r = client.get(f"/v1/activations/{activation_id}")
        if r.status_code == 200 and r.json()["status"] not in ("running", "retrying"):
            return r.json()  # type: ignore[no-any-return]
        return None

    return wait_for(done, timeout)


def instances(client: httpx.Client, function: str) -> list[dict[str, Any]]:
    """The function's worker processes as the controller reports them (asked again while the
    controller does not answer: a 503)."""

    def answered() -> list[list[dict[str, Any]]] | None:
        r = client.get(f"/v1/functions/{function}/instances")
        if r.status_code == 503:
            return None
        assert r.status_code == 200, r.text
        return [r.json()]

    return wait_for(answered, 30)[0]
