"""One NATS connection per process: reconnects forever, drains on shutdown.

``DEEPFAAS_NATS_URL`` may list several servers of a cluster, comma-separated; the client
connects to any that answers and moves to another when its server goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from eventbus.credentials import BusAuth
from eventbus.errors import BusUnavailableError
from eventbus.pipeline import Pipeline

log = logging.getLogger(__name__)


class Bus:
    """A NATS connection with its JetStream context and the KV buckets this process opened."""

    def __init__(self, nc: NATS, prefix: str) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        #: JetStream publishes with pipelined acks (the hot writes: records, events)
        self.pipeline = Pipeline(nc)
        self.prefix = prefix
        self._kv: dict[str, KeyValue] = {}
        self.closing = False
        #: when the connection was lost (loop time), None while connected
        self.lost_at: float | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        name: str,
        prefix: str = "io.deepfaas",
        auth: BusAuth | None = None,
        connect_timeout: float = 10.0,
        buffer_while_disconnected: bool = True,
    ) -> Bus:
        """Connect with ``auth``, retrying until ``connect_timeout``; once up, reconnect forever.

        ``url`` may name several servers (comma-separated); credentials in one URL serve all.
        A refused login fails at once (retrying cannot fix it). Without
        ``buffer_while_disconnected`` a publish while disconnected raises at once, and one not
        yet sent when the connection drops is discarded, never sent after the reconnect.
        """

        bus: Bus | None = None
        servers, url_auth = split_servers(url)
        shown = ",".join(_redact(server) for server in url.split(",") if server.strip())

        async def _on_disconnect() -> None:
            if bus is not None:
                bus.lost_at = asyncio.get_running_loop().time()
                if not buffer_while_disconnected:
                    _drop_unsent_publishes(bus.nc)
                if not bus.closing:
                    log.warning("disconnected from NATS %s", shown)

        async def _on_reconnect() -> None:
            if bus is not None:
                bus.lost_at = None
            log.info("reconnected to NATS %s", _redact(str(bus.nc.connected_url)) if bus else shown)

        async def _on_error(err: Exception) -> None:
            text = str(err)
            if bus is None:
                # ends nats-py's first-connect loop, which would retry forever (a refused login
                # included); the loop below retries until ``connect_timeout``, or not at all
                raise err
            if "permissions" in text.lower() or _refused(err):
                # a request the server refused times out on our side: say why, loudly
                log.error("NATS refused %s (connection %r): %s", _who(auth), name, text)
            else:
                log.debug("NATS error: %s", err)

        options = (auth or BusAuth()).connect_options()
        if url_auth is not None and "user" not in options and "user_credentials" not in options:
            user, password = url_auth  # the URL's login, for every server (discovered ones too)
            if password is None:
                options["token"] = user
            else:
                options["user"], options["password"] = user, password
        options["reconnect_time_wait"] = 0.25  # seconds; nats-py types it as int
        if not buffer_while_disconnected:
            options["pending_size"] = 0  # nats-py: publishing while disconnected raises
        loop = asyncio.get_running_loop()
        deadline = loop.time() + connect_timeout
        last: Exception | None = None
        attempt = random.randrange(len(servers))
        while loop.time() < deadline:
            nc = NATS()
            # each try starts at the next server: one that is down never blocks the others
            attempt += 1
            first = attempt % len(servers)
            try:
                await nc.connect(
                    servers[first:] + servers[:first],
                    dont_randomize=True,
                    name=name,
                    max_reconnect_attempts=-1,
                    connect_timeout=2,
                    ping_interval=5,
                    max_outstanding_pings=3,
                    disconnected_cb=_on_disconnect,
                    reconnected_cb=_on_reconnect,
                    error_cb=_on_error,
                    **options,
                )
                nc.options["dont_randomize"] = False  # reconnects spread over the cluster
                bus = cls(nc, prefix)
                return bus
            except Exception as exc:  # nats raises several unrelated types here
                with contextlib.suppress(Exception):
                    await nc.close()
                if _refused(exc):
                    raise BusUnavailableError(
                        f"NATS at {shown} refused {_who(auth)}: {exc}", url=shown
                    ) from exc
                last = exc
                await asyncio.sleep(0.2)
        raise BusUnavailableError(f"cannot connect to NATS at {shown}: {last}", url=shown) from last

    async def kv(self, bucket: str) -> KeyValue:
        """The KV bucket (bound once per process; `ensure_layout` creates it)."""
        found = self._kv.get(bucket)
        if found is None:
            found = await self.js.key_value(bucket)
            self._kv[bucket] = found
        return found

    def event_type(self, suffix: str) -> str:
        """The full event type for a suffix such as ``activation.completed``."""
        return f"{self.prefix}.{suffix}"

    @property
    def connected(self) -> bool:
        """The connection is up now (not connecting, reconnecting or closed)."""
        return bool(self.nc.is_connected)

    async def wait_connected(self, grace: float) -> bool:
        """True once connected; waits while the connection has been lost for under ``grace``
        seconds (a cluster's failover), and answers False at once in a longer outage."""
        loop = asyncio.get_running_loop()
        while not self.connected:
            if self.nc.is_closed:
                return False
            if self.lost_at is None:  # nats-py noticed before its disconnect callback ran
                self.lost_at = loop.time()
            if loop.time() >= self.lost_at + grace:
                return False
            await asyncio.sleep(0.02)
        return True

    async def close(self) -> None:
        """Drain (flush pending publishes, let handlers finish) and close."""
        self.closing = True
        if self.nc.is_closed:
            return
        try:
            await asyncio.wait_for(self.nc.drain(), timeout=5)
        except Exception as exc:  # drain raises on timeout or on a closed connection
            log.debug("drain failed (%s); closing", exc)
            await self.nc.close()


def split_servers(url: str) -> tuple[list[str], tuple[str, str | None] | None]:
    """The server URLs without credentials, and the (user, password) or (token, None) that
    the first URL with a login carried."""
    servers: list[str] = []
    found: tuple[str, str | None] | None = None
    for part in url.split(","):
        server = part.strip()
        if not server:
            continue
        if "://" not in server:
            server = f"nats://{server}"
        parsed = urlsplit(server)
        if parsed.username is not None and found is None:
            password = None if parsed.password is None else unquote(parsed.password)
            found = (unquote(parsed.username), password)
        host = parsed.netloc.rpartition("@")[2]
        servers.append(urlunsplit((parsed.scheme, host, parsed.path, "", "")))
    if not servers:
        raise BusUnavailableError("DEEPFAAS_NATS_URL names no server", url=url)
    return servers, found


def _drop_unsent_publishes(nc: NATS) -> None:
    """Forget publishes still in nats-py's buffer (it would send them after a reconnect).

    nats-py keeps every command it had not yet written when the connection dropped and sends
    them once reconnected; a caller already told "refused" would then see its work run.
    """
    kept = [cmd for cmd in nc._pending if not bytes(cmd[:5]).startswith((b"PUB ", b"HPUB "))]
    nc._pending = kept
    nc._pending_data_size = sum(len(cmd) for cmd in kept)


def _redact(url: str) -> str:
    """The URL without a password in its userinfo (for logs and errors)."""
    scheme, sep, rest = url.rpartition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    return f"{scheme}{sep}{userinfo.partition(':')[0]}:***@{host}"


def _refused(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "authorization" in text or "authentication" in text


def _who(auth: BusAuth | None) -> str:
    if auth is None or (auth.user is None and auth.creds is None):
        return "an anonymous login"
    return f"user {auth.user!r}" if auth.user is not None else f"credentials {auth.creds}"


def headers_of(msg: Any) -> dict[str, str]:
    """A message's headers as a plain dict (empty when it has none)."""
    return dict(msg.headers or {})
