"""One NATS connection per process: reconnects forever, drains on shutdown."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

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
        connect_timeout: float = 10.0,
    ) -> Bus:
        """Connect, retrying until ``connect_timeout``; once up, reconnect forever."""

        bus: Bus | None = None

        async def _on_disconnect() -> None:
            if bus is None or not bus.closing:
                log.warning("disconnected from NATS %s", url)

        async def _on_reconnect() -> None:
            log.info("reconnected to NATS %s", url)

        async def _on_error(err: Exception) -> None:
            log.debug("NATS error: %s", err)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + connect_timeout
        last: Exception | None = None
        while loop.time() < deadline:
            try:
                nc = await nats.connect(
                    url,
                    name=name,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.25,
                    connect_timeout=2,
                    ping_interval=5,
                    max_outstanding_pings=3,
                    disconnected_cb=_on_disconnect,
                    reconnected_cb=_on_reconnect,
                    error_cb=_on_error,
                )
                bus = cls(nc, prefix)
                return bus
            except Exception as exc:  # nats raises several unrelated types here
                last = exc
                await asyncio.sleep(0.2)
        raise BusUnavailableError(f"cannot connect to NATS at {url}: {last}", url=url) from last

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


def headers_of(msg: Any) -> dict[str, str]:
    """A message's headers as a plain dict (empty when it has none)."""
    return dict(msg.headers or {})
