"""The sandboxed executor against real bubblewrap, a real nats-server and local storage.

Each test runs user code in a real runner (bwrap, its own uid and namespaces) through the
same `SandboxedExecutor` the worker uses: warm reuse, bytes in and out, limits, a runner that
dies or wedges, and `ctx.storage` carried out by the worker for the function's namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from eventbus.buckets import BucketOwners
from eventbus.connection import Bus
from eventbus.storage import LocalStorage
from eventbus.streams import ensure_layout
from eventbus.types import CloudEvent
from runtimes.sandbox import SandboxLimits, SandboxUnavailableError, is_trusted
from runtimes.sandbox.command import bwrap_path
from runtimes.sandbox.host import SandboxedExecutor, SandboxFactory
from runtimes.sandbox.netns import ip_path, slirp_path
from runtimes.settings import WorkerSettings
from runtimes.types import ActivationStatus, Context, FunctionSpec
from tests.support import eventually

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    bus = await Bus.connect(nats_url, name="sandbox-test")
    await ensure_layout(bus.js)
    yield bus
    await bus.close()


@pytest.fixture
async def owners(bus: Bus) -> AsyncIterator[BucketOwners]:
    owners = BucketOwners(bus)
    await owners.start()
    yield owners
    await owners.stop()


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[LocalStorage]:
    store = LocalStorage(tmp_path / "objects")
    yield store
    await store.close()


@pytest.fixture
def factory(tmp_path: Path) -> SandboxFactory:
    return SandboxFactory(
        root=tmp_path / "sandbox",
        uid=150_000,
        exclude=[tmp_path / "objects"],
        limits=SandboxLimits(max_processes=16, max_open_files=64, max_file_mb=1),
        label="test",
    )


def ctx(name: str = "fn", timeout: float = 10.0) -> Context:
    return Context(
        activation_id=f"act-{time.monotonic_ns()}",
        function=name,
        version=1,
        deadline=time.time() + timeout,
        logger=logging.getLogger("deepfaas.fn.test"),
    )


async def run_code(
    code: str,
    factory: SandboxFactory,
    owners: BucketOwners,
    storage: LocalStorage | None = None,
    inputs: list[Any] | None = None,
    **spec: Any,
) -> list[Any]:
    """Outcomes of running ``code`` once per input in one sandboxed executor."""
    fn = FunctionSpec(name=spec.pop("name", "fn"), handler="main", code=code, **spec)
    executor = SandboxedExecutor(fn, factory, storage=storage, owners=owners)
    outcomes = []
    try:
        for value in inputs or [{}]:
            body = value if isinstance(value, bytes) else __import__("orjson").dumps(value)
            ctype = "application/octet-stream" if isinstance(value, bytes) else None
            outcomes.append(await executor.run(body, ctype, ctx(fn.name, fn.timeout_s)))
    finally:
        await executor.close()
    return outcomes


async def test_a_warm_runner_serves_every_call(factory: SandboxFactory, owners: Any) -> None:
    code = "calls = 0\ndef main(args):\n    global calls\n    calls += 1\n    return calls\n"
    outcomes = await run_code(code, factory, owners, inputs=[{}, {}, {}])
    assert [o.result for o in outcomes] == [1, 2, 3]  # one process kept its module state


async def test_bytes_in_and_out_and_async_handlers(factory: SandboxFactory, owners: Any) -> None:
    code = "async def main(data: bytes, ctx):\n    return data[::-1]\n"
    fn = FunctionSpec(name="rev", handler="main", code=code)
    executor = SandboxedExecutor(fn, factory, storage=None, owners=owners)
    try:
        c = ctx("rev")
        c = Context(**{**c.__dict__, "output": {"bucket": "b", "key": "k"}})
        out = await executor.run(b"\x00\x01binary", "application/octet-stream", c)
    finally:
        await executor.close()
    assert out.status is ActivationStatus.SUCCESS and out.result == b"yranib\x01\x00"


async def test_a_raised_platform_errors_code_is_kept_if_it_is_a_short_word(
    factory: SandboxFactory, owners: Any
) -> None:
    code = (
        "from eventbus.errors import DeepfaasError\n"
        "def main(args):\n"
        "    raise type('E', (DeepfaasError,), {'code': args['code']})('refused')\n"
    )
    inputs = [{"code": "no_capacity"}, {"code": "x; rm -rf"}, {"code": "w" * 65}]
    outcomes = await run_code(code, factory, owners, inputs=inputs)
    assert [o.status for o in outcomes] == [ActivationStatus.ERROR] * 3
    assert [o.error_code for o in outcomes] == ["no_capacity", None, None]
    assert all("refused" in (o.error or "") for o in outcomes)


async def test_env_of_the_spec_only(factory: SandboxFactory, owners: Any) -> None:
    code = "import os\ndef main(args):\n    return dict(os.environ)\n"
    [out] = await run_code(code, factory, owners, env={"MY_SETTING": "42"})
    assert out.result["MY_SETTING"] == "42"
    assert not [k for k in out.result if k.startswith(("DEEPFAAS", "NATS"))]
    assert out.result["HOME"] == "/scratch"


async def test_a_runner_starts_without_pydantic_and_loads_it_when_a_handler_needs_it(
    factory: SandboxFactory, owners: Any
) -> None:
    code = (
        "import sys\n"
        "HEAVY = ('pydantic', 'pydantic_core', 'eventbus.types', 'runtimes.types',\n"
        "         'eventbus.storage')\n"
        "def main(args, ctx):\n"
        "    loaded = [m for m in sys.modules if m in HEAVY or m.startswith('__editable__')]\n"
        "    if not args.get('look'):\n"
        "        return loaded\n"
        "    from eventbus.types import CloudEvent\n"
        "    e = ctx.event\n"
        "    return [loaded, e.type, isinstance(e, CloudEvent), e.json_data(), ctx.storage.name]\n"
    )
    fn = FunctionSpec(name="light", handler="main", code=code)
    executor = SandboxedExecutor(fn, factory, storage=None, owners=owners)
    event = CloudEvent.create(type="t.invoke", source="/test")  # its data: the body
    try:  # as a worker runs a call: with its invocation event
        c = Context(**{**ctx("light").__dict__, "event": event})
        first = await executor.run(b"{}", None, c)
        second = await executor.run(b'{"look": true}', None, c)
    finally:
        await executor.close()
    assert first.status is ActivationStatus.SUCCESS and first.result == [], first
    assert second.result == [[], "t.invoke", True, {"look": True}, "sandbox"], second
    typed = (
        "from pydantic import BaseModel\n"
        "class In(BaseModel):\n    x: int\n"
        "def main(args: In) -> dict:\n    return {'x': args.x}\n"
    )
    good, bad = await run_code(typed, factory, owners, inputs=[{"x": "7"}, {"x": "seven"}])
    assert good.status is ActivationStatus.SUCCESS and good.result == {"x": 7}, good
    assert bad.status is ActivationStatus.INVALID and "x:" in (bad.error or ""), bad


async def test_a_load_error_fails_each_call_with_its_reason(
    factory: SandboxFactory, owners: Any
) -> None:
    outcomes = await run_code("import not_a_module_anywhere\n", factory, owners, inputs=[{}, {}])
    assert all(o.status is ActivationStatus.ERROR for o in outcomes)
    assert "not_a_module_anywhere" in (outcomes[0].error or "")


async def test_a_runner_killed_mid_run_fails_that_run_and_is_replaced(
    factory: SandboxFactory, owners: Any
) -> None:
    code = (
        "import os, signal\n"
        "def main(args):\n"
        "    if args.get('die'):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return 'alive'\n"
    )
    died, after = await run_code(code, factory, owners, inputs=[{"die": True}, {}])
    assert died.status is ActivationStatus.ERROR and "SIGKILL" in (died.error or ""), died
    assert after.status is ActivationStatus.SUCCESS and after.result == "alive"


async def test_a_handler_that_blocks_its_loop_times_out_and_is_replaced(
    factory: SandboxFactory, owners: Any
) -> None:
    code = (
        "import time\n"
        "async def main(args):\n"
        "    if args.get('block'):\n"
        "        time.sleep(30)\n"  # blocks the runner's event loop: only the worker can end it
        "    return 'ok'\n"
    )
    started = time.monotonic()
    stuck, after = await run_code(code, factory, owners, inputs=[{"block": True}, {}], timeout_s=1)
    assert stuck.status is ActivationStatus.TIMEOUT
    assert after.result == "ok" and time.monotonic() - started < 20


async def test_file_and_open_file_limits(factory: SandboxFactory, owners: Any) -> None:
    big = "def main(args):\n    open('/scratch/big', 'wb').write(b'x' * (2 << 20))\n"
    [out] = await run_code(big, factory, owners)
    assert out.error == "file size limit 1 MiB exceeded", out
    many = "def main(args):\n    return [open('/dev/null') for _ in range(1000)] and 1\n"
    [out] = await run_code(many, factory, owners)
    assert out.error == "open files limit 64 exceeded", out


async def test_storage_reaches_the_namespace_buckets_only(
    factory: SandboxFactory, owners: BucketOwners, storage: LocalStorage
) -> None:
    await storage.create_bucket("theirs")  # no owner record: it belongs to `default`
    await owners.claim("mine-1", "team")
    await storage.create_bucket("mine-1")
    code = """
from eventbus.storage.errors import StorageError

async def chunks():
    for i in range(3):
        yield bytes([65 + i]) * (1 << 20)

async def main(args, ctx):
    s = ctx.storage
    out = {}
    info = await s.put("mine-1", "a/b.bin", chunks(), content_type="application/x-test")
    out["size"] = info.size
    got, stream = await s.get("mine-1", "a/b.bin")
    data = b"".join([c async for c in stream])
    out["roundtrip"] = data == b"A" * (1 << 20) + b"B" * (1 << 20) + b"C" * (1 << 20)
    out["listed"] = [o.key for o in (await s.list("mine-1")).objects]
    out["buckets"] = [b.name for b in await s.list_buckets()]
    out["exists_theirs"] = await s.bucket_exists("theirs")
    await s.create_bucket("mine-2")
    for call in ("get", "put", "list", "delete"):
        try:
            if call == "put":
                await s.put("theirs", "x", b"x")
            elif call == "list":
                await s.list("theirs")
            else:
                await getattr(s, call)("theirs", "x")
            out[call] = "allowed"
        except StorageError as exc:
            out[call] = type(exc).__name__
    return out
"""
    [out] = await run_code(code, factory, owners, storage, name="team=fn")
    assert out.status is ActivationStatus.SUCCESS, out.error_detail
    r = out.result
    assert r["size"] == 3 << 20 and r["roundtrip"] and r["listed"] == ["a/b.bin"]
    assert r["buckets"] == ["mine-1"] and r["exists_theirs"] is False
    assert {r[c] for c in ("get", "put", "list", "delete")} == {"NoSuchBucketError"}
    assert await owners.owner("mine-2") == "team"
    assert await storage.list("theirs") and not (await storage.list("theirs")).objects


async def test_sync_handlers_use_storage_from_their_own_loop(
    factory: SandboxFactory, owners: BucketOwners, storage: LocalStorage
) -> None:
    await owners.claim("sync-b", "default")
    await storage.create_bucket("sync-b")
    code = (
        "import asyncio\n"
        "def main(args, ctx):\n"
        "    async def go():\n"
        "        await ctx.storage.put('sync-b', 'k', b'v')\n"
        "        info, stream = await ctx.storage.get('sync-b', 'k')\n"
        "        return b''.join([c async for c in stream]).decode()\n"
        "    return asyncio.run(go())\n"
    )
    [out] = await run_code(code, factory, owners, storage)
    assert out.result == "v", out.error_detail


def test_only_the_platforms_own_builtins_run_unsandboxed() -> None:
    builtin = FunctionSpec(name="inference", handler="functions.inference.handler:main")
    assert is_trusted(builtin)
    assert not is_trusted(builtin.model_copy(update={"name": "t=inference"}))
    assert not is_trusted(builtin.model_copy(update={"name": "mine"}))
    assert not is_trusted(builtin.model_copy(update={"handler": "os:system"}))
    inline = FunctionSpec(name="inference", handler="main", code="def main(a):\n    return a\n")
    assert not is_trusted(inline)


@pytest.mark.parametrize(
    ("find", "package"),
    [(bwrap_path, "bubblewrap"), (slirp_path, "slirp4netns"), (ip_path, "iproute2")],
)
def test_a_missing_tool_is_named_with_its_install_command(
    monkeypatch: pytest.MonkeyPatch, find: Any, package: str
) -> None:
    assert find()  # installed by `make test`
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("os.access", lambda *_: False)  # nor in /usr/sbin or /sbin
    with pytest.raises(SandboxUnavailableError, match=f"apt-get install -y {package}"):
        find()


CONNECT = """
import socket
def main(args):
    out = {}
    for host, port in args["targets"]:
        try:
            with socket.create_connection((host, port), timeout=3) as conn:
                out[f"{host}:{port}"] = conn.recv(16).decode()
        except OSError as exc:
            out[f"{host}:{port}"] = "refused: " + type(exc).__name__
    out["resolv"] = open("/etc/resolv.conf").read().split()
    out["localhost"] = socket.getaddrinfo("localhost", 80, socket.AF_INET)[0][4][0]
    return out
"""


def outside_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (None on a machine with none)."""
    found = subprocess.run(
        ["ip", "-o", "-4", "addr", "show", "scope", "global"], capture_output=True, text=True
    ).stdout.split()
    return next((w.split("/")[0] for a, w in itertools.pairwise(found) if a == "inet"), None)


@contextlib.asynccontextmanager
async def greeter(host: str) -> AsyncIterator[int]:
    """A TCP server on ``host`` that says hello to whoever connects; its port."""

    async def hello(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(hello, host, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def test_egress_reaches_out_but_not_the_hosts_loopback(
    factory: SandboxFactory, owners: Any
) -> None:
    """What SeaweedFS's filer, nats-server or anything else listening on the host's loopback
    is to an `egress` function: not there. Its 127.0.0.1 is its own namespace's; slirp's
    gateway address (10.0.2.2, the host's loopback) is refused; the rest of the network is
    reached, and names resolve through slirp's DNS forwarder."""
    outside = outside_address()
    async with greeter("127.0.0.1") as inside_port, greeter(outside or "127.0.0.1") as out_port:
        targets = [["127.0.0.1", inside_port], ["10.0.2.2", inside_port]]
        if outside is not None:
            targets.append([outside, out_port])
        [outcome] = await run_code(CONNECT, factory, owners, inputs=[{"targets": targets}])
    assert outcome.status is ActivationStatus.SUCCESS, outcome.error
    result = outcome.result
    assert result[f"127.0.0.1:{inside_port}"].startswith("refused"), result
    assert result[f"10.0.2.2:{inside_port}"].startswith("refused"), result
    assert result["resolv"] == ["nameserver", "10.0.2.3"]
    assert result["localhost"] == "127.0.0.1"
    if outside is None:
        pytest.skip("this machine has no address but loopback: reaching out is not shown")
    assert result[f"{outside}:{out_port}"] == "hello", result


async def test_host_egress_shares_the_hosts_loopback(tmp_path: Path, owners: Any) -> None:
    """`DEEPFAAS_SANDBOX_EGRESS=host` (a pod of its own, say): the host's network as it is."""
    factory = SandboxFactory(
        root=tmp_path / "sandbox", uid=150_001, exclude=[], limits=SandboxLimits(),
        label="host", egress="host",
    )  # fmt: skip
    async with greeter("127.0.0.1") as port:
        inputs = [{"targets": [["127.0.0.1", port]]}]
        [outcome] = await run_code(CONNECT, factory, owners, inputs=inputs)
    assert outcome.status is ActivationStatus.SUCCESS, outcome.error
    assert outcome.result[f"127.0.0.1:{port}"] == "hello", outcome.result


@pytest.mark.parametrize("end", ["stop", "dies idle"])
async def test_a_runner_takes_its_network_process_along(factory: SandboxFactory, end: str) -> None:
    """Stopped, or dead between runs (its worker replaces it without a stop): slirp4netns ends
    with it either way."""
    runner = await factory.spawn("egress")
    assert runner.network is not None
    slirp = runner.network.proc
    assert slirp.returncode is None
    if end == "stop":
        await runner.stop()
    else:
        runner.proc.kill()
        await asyncio.wait_for(slirp.wait(), 5)
        await eventually(lambda: runner.network is None)
        await runner.kill()
    assert slirp.returncode is not None and runner.network is None and not runner.alive


async def test_denied_networks_are_unreachable(tmp_path: Path, owners: Any) -> None:
    """`DEEPFAAS_SANDBOX_DENY`'s networks are unreachable routes inside: the default's
    169.254.169.254 (a cloud's metadata service) fails at once, and so does this machine's own
    outside address once denied, which `test_egress_reaches_out_but_not_the_hosts_loopback`
    shows reachable without the route."""
    outside = outside_address()
    deny = WorkerSettings().sandbox_networks_denied() + ([f"{outside}/32"] if outside else [])
    factory = SandboxFactory(
        root=tmp_path / "sandbox", uid=150_002, exclude=[], limits=SandboxLimits(),
        label="deny", deny=deny,
    )  # fmt: skip
    async with greeter(outside or "127.0.0.1") as port:
        targets = [["169.254.169.254", 80]] + ([[outside, port]] if outside else [])
        started = time.monotonic()
        [outcome] = await run_code(CONNECT, factory, owners, inputs=[{"targets": targets}])
    assert outcome.status is ActivationStatus.SUCCESS, outcome.error
    result = outcome.result
    assert result["169.254.169.254:80"] == "refused: OSError", result  # EHOSTUNREACH
    assert time.monotonic() - started < 2.5  # refused at once, not a 3 s connect timeout
    if outside is not None:
        assert result[f"{outside}:{port}"] == "refused: OSError", result
