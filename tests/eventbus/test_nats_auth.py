"""The embedded nats-server asks for credentials, and each role reaches only its subjects."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import stat
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import nats.errors
import orjson
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import KeyValueConfig, StreamConfig

from eventbus.codec import to_nats
from eventbus.connection import Bus
from eventbus.credentials import RoleCredentials
from eventbus.dlq import dead_letter
from eventbus.errors import BusUnavailableError
from eventbus.kv import keys as kv_keys
from eventbus.minio_bridge import ensure_minio_stream
from eventbus.permissions import ROLES
from eventbus.publish import publish_event
from eventbus.server import EmbeddedNats, find_nats_server, free_port
from eventbus.settings import BusSettings
from eventbus.streams import (
    ACTIVATIONS_KV,
    CATALOG_KV,
    FUNCTIONS_KV,
    consumer_name,
    ensure_consumer,
    ensure_layout,
)
from eventbus.types import EVENTS_STREAM, INVOCATIONS_STREAM, CloudEvent, invoke_subject
from tests.support import eventually

PREFIX = "io.deepfaas"
AUTH_KV = "auth_keys"  # gateway/auth/keys.py (eventbus may not import gateway)


@pytest.fixture
async def admin(nats_server: EmbeddedNats) -> AsyncIterator[Bus]:
    bus = await Bus.connect(nats_server.url, name="admin", auth=nats_server.auth("admin"))
    await ensure_layout(bus.js)
    try:
        await bus.js.key_value(AUTH_KV)
    except Exception:
        await bus.js.create_key_value(KeyValueConfig(bucket=AUTH_KV, history=1))
    yield bus
    await bus.close()


async def connect(server: EmbeddedNats, role: str) -> Bus:
    return await Bus.connect(server.url, name=f"test-{role}", prefix=PREFIX, auth=server.auth(role))


async def denied(caplog: pytest.LogCaptureFixture, subject: str, action: Awaitable[Any]) -> None:
    """``action`` fails (a refused request times out) and the refusal names ``subject``."""
    caplog.clear()
    with pytest.raises((nats.errors.Error, asyncio.TimeoutError)):
        await action
    wanted = f'permissions violation for publish to "{subject}"'.lower()
    # the server's -ERR may trail the timeout
    await eventually(lambda: any(wanted in r.getMessage().lower() for r in caplog.records))


def answering(body: bytes) -> Callable[[Msg], Awaitable[None]]:
    """A subscription callback that answers every request with ``body``."""

    async def _answer(msg: Msg) -> None:
        await msg.respond(body)

    return _answer


async def answer_of(bus: Bus, subject: str) -> bytes:
    """The answer to a request on ``subject``, asked again while nobody answers yet (on a
    loaded machine a subscription made and flushed on another connection was, in about one
    run in four, not yet matched by the next request)."""

    async def ask() -> bytes | None:
        try:
            return (await bus.nc.request(subject, b"{}", timeout=2)).data
        except nats.errors.NoRespondersError:
            return None

    return await eventually(ask, timeout=10)


async def no_message(admin: Bus, subject: str, send: Awaitable[Any]) -> None:
    """Nothing that ``send`` publishes reaches a subscriber of ``subject``."""
    got: list[Msg] = []

    async def _got(msg: Msg) -> None:
        got.append(msg)

    sub = await admin.nc.subscribe(subject, cb=_got)
    await admin.nc.flush()
    await send
    await asyncio.sleep(0.2)
    await sub.unsubscribe()
    assert got == []


async def refused(url: str, **options: Any) -> None:
    """A plain nats-py client with ``options`` is refused."""
    nc = NATS()
    try:
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nc.connect(url, allow_reconnect=False, connect_timeout=2, **options)
    finally:
        await nc.close()


async def test_an_anonymous_client_is_refused(nats_server: EmbeddedNats) -> None:
    await refused(nats_server.url)
    with pytest.raises(BusUnavailableError, match="refused an anonymous login"):
        await Bus.connect(nats_server.url, name="anonymous", connect_timeout=5)


async def test_a_wrong_password_is_refused(nats_server: EmbeddedNats) -> None:
    await refused(nats_server.url, user="admin", password="guessed")
    real = nats_server.auth("worker")
    with pytest.raises(BusUnavailableError, match="refused user 'admin'"):
        await Bus.connect(
            nats_server.url,
            name="guess",
            auth=nats_server.auth("admin").__class__(user="admin", password=real.password),
        )


def test_credentials_are_private_and_kept(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    files = [nats_server.store_dir / "nats.conf", *nats_server.credentials_dir.iterdir()]
    assert {p.name for p in nats_server.credentials_dir.iterdir()} == {f"{r}.json" for r in ROLES}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(nats_server.credentials_dir.stat().st_mode) == 0o700
    again = RoleCredentials.ensure(nats_server.credentials_dir)
    assert again.passwords == RoleCredentials.load(nats_server.credentials_dir).passwords
    assert again.auth("worker") == nats_server.auth("worker")
    fresh = RoleCredentials.ensure(tmp_path / "other")
    assert fresh.passwords["admin"] != again.passwords["admin"]


async def test_restart_reuses_the_credentials(tmp_path: Path) -> None:
    server = EmbeddedNats(store_dir=tmp_path / "nats").start()
    try:
        before = server.auth("gateway")
        server.restart()
        assert server.auth("gateway") == before
        bus = await Bus.connect(server.url, name="after-restart", auth=before)
        await bus.close()
    finally:
        server.stop()


def test_a_port_another_process_holds_is_not_taken_for_ready(tmp_path: Path) -> None:
    """Something else listening on the port (here a plain socket) does not make a server that
    could not bind it "ready": start says the port is held, instead of the platform failing
    later on authentication against whatever answers there."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        server = EmbeddedNats(store_dir=tmp_path / "nats", port=port)
        with pytest.raises(BusUnavailableError, match=f"127.0.0.1:{port}: another process"):
            server.start()
        assert server.process is not None and server.process.poll() is not None
        # its monitoring port held instead: the error quotes the server, not the client port
        monitored = EmbeddedNats(store_dir=tmp_path / "monitored", http_port=port)
        with pytest.raises(BusUnavailableError, match=f"could not start: .*{port}") as raised:
            monitored.start()
        assert "another process holds" not in str(raised.value)


async def test_a_restart_is_ready_by_its_own_ports_file(tmp_path: Path) -> None:
    """A server killed with SIGKILL leaves its ports file; the next start is ready only once
    the new process has written its own."""
    server = EmbeddedNats(store_dir=tmp_path / "nats").start()
    try:
        assert server.ports_dir is not None
        first = server.process
        assert first is not None
        assert [p.name for p in server.ports_dir.iterdir()] == [f"nats-server_{first.pid}.ports"]
        server.stop(kill=True)
        assert list(server.ports_dir.iterdir())  # left behind
        server.start()
        assert server.process is not None and server.process.pid != first.pid
        names = [p.name for p in server.ports_dir.iterdir()]
        assert names == [f"nats-server_{server.process.pid}.ports"]
        bus = await Bus.connect(server.url, name="after-kill", auth=server.auth("gateway"))
        await bus.close()
    finally:
        server.stop()


async def test_the_worker_role_does_its_work(nats_server: EmbeddedNats, admin: Bus) -> None:
    fn = "authfn"
    functions = await admin.kv(FUNCTIONS_KV)
    await functions.put(fn, b'{"name": "authfn"}')
    await ensure_consumer(admin.js, fn, ack_wait=5)
    worker = await connect(nats_server, "worker")
    try:
        await ensure_layout(worker.js)  # reads only: everything exists
        await ensure_consumer(worker.js, fn, ack_wait=5)  # the same config: reads only
        assert (await (await worker.kv(FUNCTIONS_KV)).get(fn)).value == b'{"name": "authfn"}'
        assert fn in await kv_keys(await worker.kv(FUNCTIONS_KV))  # a listing of its own
        activations = await worker.kv(ACTIVATIONS_KV)
        await activations.put("a1", b"claimed")
        assert (await activations.get("a1")).value == b"claimed"
        # the sync path: a queue subscriber on run.<fn> answers the gateway's request
        sub = await worker.nc.subscribe(f"run.{fn}", queue="workers", cb=answering(b"done"))
        await worker.nc.flush()
        assert await answer_of(admin, f"run.{fn}") == b"done"
        await sub.unsubscribe()
        # the async path: pull from its durable consumer and ack
        await admin.js.publish(invoke_subject(fn), b"work")
        pull = await worker.js.pull_subscribe(
            invoke_subject(fn), durable=consumer_name(fn), stream=INVOCATIONS_STREAM
        )
        msgs = await pull.fetch(1, timeout=2)
        assert msgs[0].data == b"work"
        await msgs[0].ack_sync()
        await pull.unsubscribe()
        # announcements, completion events and dead letters
        await worker.nc.publish(f"control.ready.{fn}", b"{}")
        done = CloudEvent.create(type=f"{PREFIX}.activation.completed", source="test", data={})
        assert (await publish_event(worker, done)).stream == EVENTS_STREAM
        assert (await worker.js.publish(f"dlq.function.{fn}", b"{}")).stream == "DLQ"
        await worker.nc.flush()
    finally:
        await worker.close()


async def test_the_worker_role_is_kept_out(
    nats_server: EmbeddedNats, admin: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="eventbus.connection")
    worker = await connect(nats_server, "worker")
    js = worker.nc.jetstream(timeout=0.5)
    try:
        # the API keys: neither read nor written
        await denied(caplog, "$JS.API.STREAM.INFO.KV_auth_keys", js.key_value(AUTH_KV))
        await denied(caplog, "$KV.auth_keys.k", js.publish("$KV.auth_keys.k", b"forged"))
        # storage events into EVENTS (which would fire triggers); only `object.created` is
        # open, for the output a worker writes and announces (`runtimes/worker/results.py`)
        for kind in ("object.deleted", "notification", "bucket.created"):
            forged = CloudEvent.create(
                type=f"{PREFIX}.storage.{kind}", source="forged", data={"key": "x"}
            )
            headers, body = to_nats(forged)
            subject = f"events.storage.{kind}"
            await denied(caplog, subject, js.publish(subject, body, headers=headers))
        info = await admin.js.stream_info(EVENTS_STREAM, subjects_filter="events.storage.>")
        assert not info.state.subjects
        # invoking a function: neither the sync nor the async subject
        await no_message(admin, "run.other", worker.nc.publish("run.other", b"{}"))
        await no_message(admin, "invoke.other", worker.nc.publish("invoke.other", b"{}"))
        await denied(caplog, "invoke.other", js.publish("invoke.other", b"{}"))
        # the registry and the other platform buckets
        functions = await js.key_value(FUNCTIONS_KV)
        await denied(caplog, "$KV.functions.evil", functions.put("evil", b"{}"))
        with pytest.raises(nats.js.errors.KeyNotFoundError):
            await (await admin.kv(FUNCTIONS_KV)).get("evil")
        for bucket in ("triggers", "subscriptions", CATALOG_KV):
            await denied(caplog, f"$KV.{bucket}.x", js.publish(f"$KV.{bucket}.x", b"{}"))
        # other roles' replies (a KV read of the gateway's comes back on its inbox)
        await worker.nc.subscribe("_INBOX.gateway.>")
        await worker.nc.flush()
        await eventually(
            lambda: any("subscription" in r.getMessage().lower() for r in caplog.records)
        )
    finally:
        await worker.close()


async def test_platform_workers_reach_the_catalog_and_rank(
    nats_server: EmbeddedNats, admin: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="eventbus.connection")
    platform = await connect(nats_server, "platform-worker")
    try:
        catalog = await platform.kv(CATALOG_KV)
        await catalog.put("module.digits", b"{}")
        sub = await admin.nc.subscribe("run.rank", cb=answering(b"ranked"))
        await admin.nc.flush()
        assert await answer_of(platform, "run.rank") == b"ranked"
        await sub.unsubscribe()
        js = platform.nc.jetstream(timeout=0.5)
        await denied(caplog, "$JS.API.STREAM.INFO.KV_auth_keys", js.key_value(AUTH_KV))
        await no_message(admin, "run.other", platform.nc.publish("run.other", b"{}"))
    finally:
        await platform.close()


async def test_the_platform_roles_do_their_work(nats_server: EmbeddedNats, admin: Bus) -> None:
    gateway = await connect(nats_server, "gateway")
    controller = await connect(nats_server, "controller")
    dispatcher = await connect(nats_server, "dispatcher")
    deliverer = await connect(nats_server, "deliverer")
    bridge = await connect(nats_server, "bridge")
    try:
        for bus in (gateway, controller, dispatcher, deliverer, bridge):
            await ensure_layout(bus.js)
        # gateway: the registry, the API keys, events, the sync path
        await (await gateway.kv(FUNCTIONS_KV)).put("gfn", b"{}")
        await (await gateway.js.key_value(AUTH_KV)).put("key", b"{}")
        event = CloudEvent.create(type=f"{PREFIX}.custom.thing", source="test", data={})
        await publish_event(gateway, event)
        # controller: the function's consumer, workers' announcements
        await ensure_consumer(controller.js, "gfn", ack_wait=3)
        got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def _ready(msg: Msg) -> None:
            got.set_result(msg.data)

        sub = await controller.nc.subscribe("control.ready.*", cb=_ready)
        await controller.nc.flush()

        async def heard() -> bool:  # core NATS keeps nothing: say it until it is heard
            await admin.nc.publish("control.ready.gfn", b"up")
            await asyncio.wait([got], timeout=0.5)
            return got.done()

        await eventually(heard, timeout=10)
        assert got.result() == b"up"
        await sub.unsubscribe()
        # dispatcher: a durable on EVENTS, invocations out
        pull = await dispatcher.js.pull_subscribe("events.>", durable="auth-test", stream="EVENTS")
        assert (await pull.fetch(1, timeout=2))[0].subject.startswith("events.")
        await pull.unsubscribe()
        await dispatcher.js.publish(invoke_subject("gfn"), b"{}")
        # deliverer: a NATS sink subject; the bridge: storage events
        await deliverer.nc.publish("sink.team.events", b"{}")
        created = CloudEvent.create(type=f"{PREFIX}.storage.object.created", source="s", data={})
        await publish_event(bridge, created)
        for bus in (deliverer, bridge):
            await bus.nc.flush()
    finally:
        for bus in (gateway, controller, dispatcher, deliverer, bridge):
            await bus.close()


async def test_the_bridge_keeps_to_minio_s_stream(
    nats_server: EmbeddedNats, admin: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="eventbus.connection")
    bridge = await connect(nats_server, "bridge")
    try:
        await ensure_minio_stream(bridge, stream="MINIO_T", subject="minio.t")
        await admin.js.publish("minio.t", b"{}")
        pull = await bridge.js.pull_subscribe("minio.t", durable="bridge-t", stream="MINIO_T")
        await (await pull.fetch(1, timeout=2))[0].ack()
        await pull.unsubscribe()
        poison = CloudEvent.create(id="p", type="t", source="/storage/minio", data={})
        # a message it cannot read goes to the dead letters (it used to time out, so the
        # bridge left it to be redelivered for ever)
        await dead_letter(bridge, kind="bridge", target="minio", event=poison, error="x",
                          attempts=1)  # fmt: skip
        js = bridge.nc.jetstream(timeout=0.5)
        events = StreamConfig(name=EVENTS_STREAM, subjects=["events.>", "minio.x"])
        await denied(caplog, "$JS.API.STREAM.UPDATE.EVENTS", js.update_stream(events))
        await denied(
            caplog,
            f"$JS.API.CONSUMER.CREATE.{INVOCATIONS_STREAM}.fn-x.invoke.x",
            js.pull_subscribe("invoke.x", durable="fn-x", stream=INVOCATIONS_STREAM),
        )
    finally:
        await bridge.close()


async def test_the_deliverer_cannot_publish_platform_subjects(
    nats_server: EmbeddedNats, admin: Bus
) -> None:
    deliverer = await connect(nats_server, "deliverer")
    try:
        for subject in (
            "events.storage.object.created",
            "activation.completed",  # a forged completion would fire chained functions
            "invoke.other",
            "run.other",
        ):
            await no_message(admin, subject, deliverer.nc.publish(subject, orjson.dumps({})))
    finally:
        await deliverer.close()


async def test_settings_carry_the_credentials_of_an_external_server(
    nats_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = nats_server.auth("gateway")
    monkeypatch.setenv("DEEPFAAS_NATS_URL", nats_server.url)
    monkeypatch.setenv("DEEPFAAS_NATS_USER", "gateway")
    monkeypatch.setenv("DEEPFAAS_NATS_PASSWORD", gateway.password or "")
    monkeypatch.setenv("DEEPFAAS_NATS_INBOX_PREFIX", "_INBOX.gateway")
    monkeypatch.setenv("DEEPFAAS_NATS_CREDS", "")  # blank is unset, as a worker's env has it
    settings = BusSettings()
    auth = settings.bus_auth("dispatcher")  # no credentials dir: the configured user for all
    assert (auth.user, auth.creds, auth.inbox_prefix) == ("gateway", None, "_INBOX.gateway")
    bus = await Bus.connect(settings.nats_url, name="external", auth=auth)
    try:
        await (await bus.kv(FUNCTIONS_KV)).put("from-settings", b"{}")
    finally:
        await bus.close()
    monkeypatch.setenv("DEEPFAAS_NATS_CREDENTIALS_DIR", str(nats_server.credentials_dir))
    assert BusSettings().bus_auth("dispatcher") == nats_server.auth("dispatcher")
    # what a spawned worker gets: its role, and nothing of its parent's credentials dir
    env = nats_server.auth("worker").env()
    assert env["DEEPFAAS_NATS_USER"] == "worker" and env["DEEPFAAS_NATS_CREDENTIALS_DIR"] == ""


async def test_a_creds_file_and_tls_reach_nats_py(tmp_path: Path) -> None:
    creds = tmp_path / "user.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\n")
    auth = BusSettings(nats_creds=creds).bus_auth()
    try:
        import nkeys  # noqa: F401
    except ImportError:
        with pytest.raises(BusUnavailableError, match="nkeys"):
            auth.connect_options()
    else:
        assert auth.connect_options()["user_credentials"] == str(creds)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path, Path, Path]]:
    """A nats-server that requires TLS with a client certificate, and a password."""
    ca, cert, key = _certificates(tmp_path)
    server = EmbeddedNats(store_dir=tmp_path / "tls")
    server.port = free_port()
    config = tmp_path / "tls.conf"
    config.write_text(
        f"listen: 127.0.0.1:{server.port}\n"
        f'tls {{ cert_file: "{cert}", key_file: "{key}", ca_file: "{ca}", verify: true }}\n'
        'authorization { users = [ {user: "tls", password: "secret-tls"} ] }\n'
    )
    server.process = subprocess.Popen(
        [find_nats_server(), "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server.wait_ready()
    yield server.port, ca, cert, key
    server.stop()


async def test_tls_with_a_client_certificate(tls_server: tuple[int, Path, Path, Path]) -> None:
    """A server that requires TLS (and a client certificate) accepts what the settings name."""
    port, ca, cert, key = tls_server
    settings = BusSettings(
        nats_url=f"tls://127.0.0.1:{port}",
        nats_user="tls",
        nats_password="secret-tls",
        nats_tls_ca=ca,
        nats_tls_cert=cert,
        nats_tls_key=key,
    )
    bus = await Bus.connect(settings.nats_url, name="tls", auth=settings.bus_auth())
    try:
        await bus.nc.publish("tls.ok", b"")
        await bus.nc.flush()
    finally:
        await bus.close()
    without_cert = settings.model_copy(update={"nats_tls_cert": None, "nats_tls_key": None})
    with pytest.raises(BusUnavailableError):
        await Bus.connect(
            settings.nats_url, name="no-cert", auth=without_cert.bus_auth(), connect_timeout=1
        )


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for 127.0.0.1 signed by it (server and client use the same)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "deepfaas test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = (directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    paths[0].write_bytes(ca_cert.public_bytes(pem))
    paths[1].write_bytes(cert.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths
