"""One NATS connection per process: reconnects forever, drains on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from eventbus.credentials import BusAuth
from eventbus.errors import BusUnavailableError

log = logging.getLogger(__name__)


class Bus:
    """A NATS connection with its JetStream context and the KV buckets this process opened."""

    def __init__(self, nc: NATS, prefix: str) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.prefix = prefix
        self._kv: dict[str, KeyValue] = {}
        self.closing = False

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        name: str,
        prefix: str = "io.deepfaas",
        auth: BusAuth | None = None,
        connect_timeout: float = 10.0,
    ) -> Bus:
        """Connect with ``auth``, retrying until ``connect_timeout``; once up, reconnect forever.

        A refused login fails at once (retrying cannot fix it).
        """

        bus: Bus | None = None
        shown = _redact(url)

        async def _on_disconnect() -> None:
            if bus is not None and not bus.closing:
                log.warning("disconnected from NATS %s", shown)

        async def _on_reconnect() -> None:
            log.info("reconnected to NATS %s", shown)

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
        options["reconnect_time_wait"] = 0.25  # seconds; nats-py types it as int
        loop = asyncio.get_running_loop()
        deadline = loop.time() + connect_timeout
        last: Exception | None = None
        while loop.time() < deadline:
            nc = NATS()
            try:
                await nc.connect(
                    url,
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
        return bool(self.nc.is_connected)

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
