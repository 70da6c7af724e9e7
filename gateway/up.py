"""`deepfaas up`: the whole platform in one process on its embedded default.

It starts nats-server (JetStream on local disk) unless told to use another, the controller
with the `local` provider (worker processes), and the gateway, and stops them in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Coroutine, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings
from starlette.applications import Starlette

from eventbus import loop as event_loop
from eventbus.connection import Bus
from eventbus.credentials import RoleCredentials
from eventbus.delivery import Deliverer
from eventbus.dispatcher import run_dispatcher
from eventbus.permissions import (
    ADMIN,
    BRIDGE,
    CONTROLLER,
    DELIVERER,
    DISPATCHER,
    PLATFORM_WORKER,
    WORKER,
)
from eventbus.schedules import create_clock
from eventbus.server import EmbeddedNats, cluster_url, create_cluster
from eventbus.settings import BusSettings
from eventbus.streams import ensure_layout
from gateway.auth.bootstrap import auth_file, ensure_first_key
from gateway.auth.keys import KeyStore
from gateway.builtins import register_builtins
from gateway.routes.events import close_streams
from gateway.settings import GatewaySettings
from gateway.storage_settings import run_storage_bridge, seaweedfs_settings, start_seaweedfs
from runtimes.control.leader import create_lease, while_leader
from runtimes.control.plane import run_control_plane
from runtimes.providers.local import LocalProvider
from runtimes.sandbox.command import bwrap_path
from runtimes.sandbox.netns import ip_path, slirp_path
from runtimes.sandbox.types import SandboxUnavailableError
from runtimes.settings import ControllerSettings, WorkerSettings

log = logging.getLogger("deepfaas.up")


class UpSettings(GatewaySettings):
    """Settings of the all-in-one process."""

    embedded_nats: bool = Field(default=True, description="start nats-server here")
    nats_port: int = 4222
    nats_cluster: int = Field(
        default=1,
        ge=1,
        le=9,
        description="start this many clustered nats-servers on loopback (ports from "
        "nats_port up; streams then get min(3, n) replicas unless DEEPFAAS_NATS_REPLICAS says)",
    )
    idle_release_s: float = 300.0
    dispatcher: bool = Field(default=True, description="run the trigger dispatcher here")
    storage_bridge: bool = Field(
        default=True, description="run the storage bridge here (else `deepfaas storage-bridge`)"
    )
    builtins: str = Field(
        default="inference,retrain,rank,deploy",
        description="built-in functions to register at start if absent (comma-separated)",
    )
    trusted_functions: str = Field(
        default="inference,retrain,rank,deploy",
        description="functions whose workers get the bus role `platform-worker` (comma-separated "
        "internal names: bare for namespace default); every other worker gets `worker`",
    )


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def worker_env(settings: GatewaySettings) -> dict[str, str]:
    """What every worker process needs to find the bus (passed down, not read by libraries)."""
    root = settings.storage_root or settings.data_dir / "storage"
    env = {
        "DEEPFAAS_DATA_DIR": str(settings.data_dir.resolve()),
        "DEEPFAAS_STORAGE_BACKEND": settings.storage_backend,
        "DEEPFAAS_STORAGE_ROOT": str(root.resolve()),
        "DEEPFAAS_STORAGE_EVENTS": settings.storage_events,
        "DEEPFAAS_STORAGE_S3_SECURE": str(settings.storage_s3_secure).lower(),
        "DEEPFAAS_SANDBOX": "true" if settings.sandbox else "false",
        "DEEPFAAS_UVLOOP": "true" if settings.uvloop else "false",
        "DEEPFAAS_NATS_URL": settings.nats_url,
        "DEEPFAAS_EVENT_PREFIX": settings.event_prefix,
        "DEEPFAAS_ACK_WAIT_S": str(settings.ack_wait_s),
        "DEEPFAAS_RETRY_BASE_S": str(settings.retry_base_s),
        "DEEPFAAS_RETRY_MAX_S": str(settings.retry_max_s),
    }
    if settings.storage_s3_endpoint:
        env["DEEPFAAS_STORAGE_S3_ENDPOINT"] = settings.storage_s3_endpoint
    if settings.storage_s3_region:
        env["DEEPFAAS_STORAGE_S3_REGION"] = settings.storage_s3_region
    for name in ("storage_s3_access_key", "storage_s3_secret_key"):  # a worker reads, writes
        if (secret := getattr(settings, name)) is not None:
            env[f"DEEPFAAS_{name.upper()}"] = secret.get_secret_value()
    return env


def worker_auth_env(settings: BusSettings, trusted: Iterable[str]) -> dict[str, dict[str, str]]:
    """Bus credentials (as env) of the workers the controller starts, by function.

    With the roles' credentials at hand, the ``trusted`` functions get `platform-worker` and
    every other (key ``""``) the narrow `worker`; else all get the one configured credential.
    """
    if settings.nats_credentials_dir is None:
        return {"": settings.bus_auth().env()}
    roles = RoleCredentials.load(settings.nats_credentials_dir, (WORKER, PLATFORM_WORKER))
    tls = settings.bus_auth()
    platform = roles.auth(PLATFORM_WORKER, tls=tls).env()
    return {"": roles.auth(WORKER, tls=tls).env(), **{name: platform for name in trusted}}


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


async def run_controller(
    settings: ControllerSettings,
    env: dict[str, str],
    log_dir: Path,
    trusted: Iterable[str] = (),
) -> None:
    """Run the controller until cancelled: leading while it holds the lease, else standing by."""
    bus = await Bus.connect(
        settings.nats_url,
        name="controller",
        prefix=settings.event_prefix,
        auth=settings.bus_auth(CONTROLLER),
    )
    await ensure_layout(bus.js, settings.layout())
    auth_env = worker_auth_env(settings, trusted)

    async def lead() -> None:
        provider = LocalProvider.from_settings(
            settings, env=env, log_dir=log_dir, auth_env=auth_env
        )
        # credentials references in the sites file name variables of this process
        await run_control_plane(bus, settings, provider, env=os.environ)

    # Only the holder of the lease starts workers; another controller stands by (docs).
    lease = create_lease(bus, "controller", settings.state_dir, ttl_s=settings.leader_ttl_s)
    try:
        await while_leader(lease, lead)
    finally:
        await bus.close()


async def until_stopped(work: Coroutine[Any, Any, None]) -> None:
    """Run one split-mode part until SIGTERM or SIGINT, then cancel it so that it cleans up
    (a controller releases its lease at once and drains its workers)."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


S = TypeVar("S", bound=BaseSettings)

#: seconds requests in flight (an SSE stream, a sync invoke) get to finish when `up` stops
SHUTDOWN_GRACE_S = 5


class _Server(uvicorn.Server):
    """uvicorn without its own signal capture: `up` stops the parts in order itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)
        yield

    def _on_signal(self) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if isinstance(self.config.app, Starlette):
            close_streams(self.config.app)  # event streams end now, not when clients hang up
        await super().shutdown(sockets)


async def run_deliverer(settings: GatewaySettings) -> None:
    """Deliver events to the subscriptions' sinks until cancelled."""
    bus = await Bus.connect(
        settings.nats_url,
        name="deliverer",
        prefix=settings.event_prefix,
        auth=settings.bus_auth(DELIVERER),
    )
    await ensure_layout(bus.js, settings.layout())
    deliverer = Deliverer(
        bus,
        ack_wait=settings.ack_wait_s,
        base_delay=settings.retry_base_s,
        max_delay=settings.retry_max_s,
        egress=settings.egress(),
    )
    await deliverer.start()
    try:
        await asyncio.Event().wait()
    finally:
        await deliverer.stop()
        await bus.close()


async def run_gateway(settings: GatewaySettings) -> None:
    """Serve the gateway until cancelled or interrupted."""
    # imported here: the API's modules are heavy, and the split-mode controller, dispatcher
    # and deliverer commands import this module without serving it
    from gateway.app import create_app

    config = uvicorn.Config(
        create_app(settings, freeze_gc=True),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="on",
        # a request still open past this (a long sync invoke) is cut off
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )
    await _Server(config).serve()


async def up(settings: UpSettings) -> None:
    """Start everything; return when interrupted."""
    seaweed = start_seaweedfs(settings)  # storage_backend=seaweedfs naming none: its own
    if seaweed is not None:
        settings = settings.model_copy(update=seaweedfs_settings(seaweed))
    servers: list[EmbeddedNats] = []
    if settings.embedded_nats:
        servers = _start_nats(settings)
        # each part below connects with its own role's credentials from this directory
        update: dict[str, object] = {
            "nats_url": cluster_url(servers),
            "nats_credentials_dir": servers[0].credentials_dir,
        }
        if len(servers) > 1 and "nats_replicas" not in settings.model_fields_set:
            update["nats_replicas"] = min(3, len(servers))
        settings = settings.model_copy(update=update)
    # the bus settings (URL, credentials, TLS, prefix, leases) as `up` resolved them
    bus = {name: getattr(settings, name) for name in BusSettings.model_fields}
    controller_settings = ControllerSettings(
        **bus,
        state_dir=str(settings.data_dir),
        idle_release_s=settings.idle_release_s,
    )
    if not settings.sandbox:
        log.warning(SANDBOX_OFF_WARNING)
        print(SANDBOX_OFF_WARNING, flush=True)
    else:
        try:
            bwrap_path()
            workers = WorkerSettings()  # a bad DEEPFAAS_SANDBOX_DENY stops `up`, not a worker
            if workers.sandbox_egress == "isolated":
                slirp_path()
                if workers.sandbox_networks_denied():
                    ip_path()
        except (SandboxUnavailableError, ValueError) as exc:  # ValueError: a bad setting
            raise SystemExit(str(exc)) from None
    first_key = await bootstrap_bus(settings)
    env = worker_env(settings)
    trusted = _names(settings.trusted_functions)
    controller = asyncio.create_task(
        run_controller(controller_settings, env, settings.data_dir / "logs", trusted),
        name="controller",
    )
    deliverer = asyncio.create_task(run_deliverer(settings), name="deliverer")
    background = [controller, deliverer]
    if settings.dispatcher:
        dispatch = run_dispatcher(
            settings.nats_url,
            prefix=settings.event_prefix,
            ack_wait=settings.ack_wait_s,
            auth=settings.bus_auth(DISPATCHER),
            clock=create_clock(settings.schedule_clock),
            schedule_grace_s=settings.schedule_grace_s,
            freeze_gc=True,
        )
        background.append(asyncio.create_task(dispatch, name="dispatcher"))
    if settings.storage_events == "bridge" and settings.storage_bridge:
        bridge = run_storage_bridge(
            settings,
            settings.nats_url,
            settings.event_prefix,
            auth=settings.bus_auth(BRIDGE),
            layout=settings.layout(),
        )
        background.append(asyncio.create_task(bridge, name="storage-bridge"))
    print(
        f"deepfaas is up\n"
        f"  API      http://{settings.host}:{settings.port}  (docs: /docs)\n"
        f"  NATS     {settings.nats_url}{_credentials_line(settings)}\n"
        f"  data     {settings.data_dir.resolve()}\n"
        f"  workers  logs in {settings.data_dir.resolve() / 'logs'}\n"
        f"{_key_lines(first_key, settings)}"
        f"Press Ctrl-C to stop.",
        flush=True,
    )
    # a nats-server that dies is started again, on its port with its store
    background += [asyncio.create_task(s.keep_running(), name="nats-server") for s in servers]
    try:
        await run_gateway(settings)
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        for server in reversed(servers):
            server.stop()
        if seaweed is not None:
            seaweed.stop()


def _start_nats(settings: UpSettings) -> list[EmbeddedNats]:
    """The embedded nats-server (data dir ``nats/``), or a loopback cluster (``nats/n1``…)."""
    ports = [settings.nats_port + i for i in range(settings.nats_cluster)]
    for port in ports:
        if not _port_free("127.0.0.1", port):
            raise SystemExit(f"port {port} is in use: stop what holds it or set DEEPFAAS_NATS_PORT")
    store = settings.data_dir / "nats"
    # each dies with this process, even killed: a restart finds its port free
    if settings.nats_cluster == 1:
        server = EmbeddedNats(store_dir=store, port=settings.nats_port, die_with_parent=True)
        return [server.start()]
    servers = create_cluster(store, settings.nats_cluster, ports=ports)
    for server in servers:  # a cluster's JetStream waits for its peers: start all, then wait
        server.die_with_parent = True
        server.start(timeout=30.0)
    return servers


async def bootstrap_bus(settings: UpSettings) -> str | None:
    """Declare the layout, register the built-ins, make the first key: one connection."""
    names = _names(settings.builtins)
    bus = await Bus.connect(
        settings.nats_url,
        name="bootstrap",
        prefix=settings.event_prefix,
        auth=settings.bus_auth(ADMIN),
    )
    try:
        await ensure_layout(bus.js, settings.layout(settings.data_dir), private=True)
        # (deployments whose runtimes died with the last run are placed again by the
        # controller once it leads: runtimes.control.deployments)
        if names:
            await register_builtins(bus, names)
        first = await ensure_first_key(bus, settings.data_dir)
        if not settings.sandbox:
            await _check_single_user(bus)
        return first
    finally:
        await bus.close()


SANDBOX_OFF_WARNING = (
    "WARNING: DEEPFAAS_SANDBOX=off: user functions run inside the worker processes, with the "
    "platform's bus credentials and files. Use this only on a trusted single-user machine."
)


async def _check_single_user(bus: Bus) -> None:
    """Refuse the sandbox-off mode while more than one namespace has keys."""
    namespaces = await KeyStore(bus).namespaces()
    if len(namespaces) > 1:
        raise SystemExit(
            "DEEPFAAS_SANDBOX=off is refused: namespaces "
            f"{', '.join(sorted(namespaces))} have keys (a shared platform runs user code in "
            "sandboxes). Revoke the other namespaces' keys or leave the sandbox on."
        )


def _credentials_line(settings: UpSettings) -> str:
    if settings.nats_credentials_dir is None:
        return ""
    return f"  (credentials per role: {settings.nats_credentials_dir.resolve()}/<role>.json)"


def _key_lines(credential: str | None, settings: UpSettings) -> str:
    path = auth_file(settings.data_dir).resolve()
    if credential is None:
        return f"  auth     the default namespace's API key is in {path}\n"
    return (
        f"  auth     API key of namespace 'default' (shown once; also in {path}, mode 0600):\n"
        f"           {credential}\n"
        f'           curl -u "$(cat {path})" ...   or   deepfaas --auth ... / DEEPFAAS_AUTH\n'
    )


def main_up() -> None:
    """Entry point of `deepfaas up`."""
    level = os.environ.get("DEEPFAAS_LOG_LEVEL", "INFO").strip().upper()
    if level not in logging.getLevelNamesMapping():
        raise SystemExit(
            f"deepfaas: invalid settings: DEEPFAAS_LOG_LEVEL: {level!r} is not one of "
            "DEBUG, INFO, WARNING, ERROR, CRITICAL"
        )
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_or_exit(UpSettings)
    event_loop.run(up(settings), uvloop=settings.uvloop)


def settings_or_exit(cls: type[S]) -> S:
    """The settings from the environment; invalid ones stop the process with one line."""
    try:
        return cls()
    except ValidationError as exc:
        reasons = "; ".join(
            (f"DEEPFAAS_{str(e['loc'][0]).upper()}: " if e["loc"] else "")
            + str(e["msg"]).removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise SystemExit(f"deepfaas: invalid settings: {reasons}") from None
