"""One active replica of a service: a leader lease in the `leases` KV bucket.

The holder writes ``{holder, expires}`` under the service's key and renews it every third of
its time to live by compare-and-set on the revision it last wrote. A standby reads the key
every renewal period and takes it over, by compare-and-set on the revision it read, only once
``expires`` has passed (or the holder is a dead process of its own host and data dir). A holder
that cannot renew stops acting a renewal period before its lease ends, so a standby starts only
after the old holder stopped, within the clocks' skew between hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from nats.errors import Error as NatsError
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from eventbus.connection import Bus
from eventbus.kv import entry, write
from eventbus.streams import LEASES_KV
from runtimes.pids import pid_alive

log = logging.getLogger(__name__)

#: what a failed bus call raises (a lost connection, a silent server, a refused request)
_BUS_ERRORS = (NatsError, asyncio.TimeoutError, OSError)


@dataclass(frozen=True)
class LeaseRecord:
    """The value under a lease's key: who holds it and until when (epoch seconds)."""

    holder: str
    expires: float

    @classmethod
    def parse(cls, data: bytes | None) -> LeaseRecord | None:
        """The record, or None for an empty or unreadable value (then anyone may take it)."""
        try:
            body = orjson.loads(data or b"")
            return cls(str(body["holder"]), float(body["expires"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


class LeaderLease:
    """A lease on one key of the `leases` bucket, held by at most one process at a time."""

    def __init__(
        self,
        bus: Bus,
        name: str,
        holder: str,
        *,
        ttl_s: float = 10.0,
        is_stale: Callable[[str], bool] = lambda holder: False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bus = bus
        self.name = name
        self.holder = holder
        self.ttl_s = ttl_s
        self.renew_s = ttl_s / 3
        self.is_stale = is_stale
        self.clock = clock
        self.revision: int | None = None
        self.expires = 0.0

    @property
    def held(self) -> bool:
        """Whether this process holds the lease now (by its own clock)."""
        return self.revision is not None and self.clock() < self.expires

    async def _kv(self) -> KeyValue:
        return await self.bus.kv(LEASES_KV)

    def _body(self, now: float) -> bytes:
        return orjson.dumps({"holder": self.holder, "expires": now + self.ttl_s})

    async def try_acquire(self) -> bool:
        """Take the lease if it is free, lapsed, stale or ours; False while another holds it."""
        kv = await self._kv()
        now = self.clock()
        found = await entry(kv, self.name)  # None: never taken, or released
        if found is not None:
            current = LeaseRecord.parse(found.value)
            if (
                current is not None
                and current.holder != self.holder
                and current.expires > now
                and not self.is_stale(current.holder)
            ):
                return False
        last = found.revision if found else None
        revision = await write(kv, self.name, self._body(now), last=last)
        if revision is None:  # another standby was faster
            return False
        self.revision, self.expires = revision, now + self.ttl_s
        return True

    async def acquire(self) -> None:
        """Wait until this process holds the lease."""
        while True:
            try:
                if await self.try_acquire():
                    log.info("lease %s: held by %s", self.name, self.holder)
                    return
            except _BUS_ERRORS as exc:
                log.warning("lease %s: cannot read it (%s); trying again", self.name, exc)
            await asyncio.sleep(self.renew_s)

    async def keep(self) -> None:
        """Renew the lease until it is lost (taken over, or not renewed in time); then return."""
        while True:
            await asyncio.sleep(self.renew_s)
            now = self.clock()
            try:
                kv = await self._kv()
                self.revision = await write(kv, self.name, self._body(now), last=self.revision)
                if self.revision is None:
                    log.warning("lease %s: taken over by another holder", self.name)
                    return
                self.expires = now + self.ttl_s
            except _BUS_ERRORS as exc:
                # stop a renewal period before the lease ends: a standby may take it then
                if self.clock() >= self.expires - self.renew_s:
                    log.warning("lease %s: not renewed in time (%s); giving it up", self.name, exc)
                    self.revision = None
                    return
                log.warning("lease %s: renewal failed (%s); trying again", self.name, exc)

    async def release(self) -> None:
        """Give the lease up now (a standby takes it at once), if this process holds it."""
        revision, self.revision = self.revision, None
        if revision is None:
            return
        # read it again: a renewal cancelled in flight may have written a newer revision
        with contextlib.suppress(*_BUS_ERRORS, KeyNotFoundError, KeyWrongLastSequenceError):
            kv = await self._kv()
            entry = await kv.get(self.name)
            current = LeaseRecord.parse(entry.value)
            if current is not None and current.holder == self.holder:
                await kv.delete(self.name, last=entry.revision)
                log.info("lease %s: released by %s", self.name, self.holder)


def create_lease(bus: Bus, name: str, scope: str, *, ttl_s: float) -> LeaderLease:
    """A lease held as ``<host>:<pid>:<scope>``; a dead process of this host and scope (a data
    dir) is stale at once, so a restart after a crash does not wait for its own lease to lapse."""
    host, scope = socket.gethostname(), os.path.abspath(scope)

    def is_stale(holder: str) -> bool:
        their_host, _, rest = holder.partition(":")
        pid, _, their_scope = rest.partition(":")
        if their_host != host or their_scope != scope or not pid.isdigit():
            return False
        return not pid_alive(int(pid))

    return LeaderLease(bus, name, f"{host}:{os.getpid()}:{scope}", ttl_s=ttl_s, is_stale=is_stale)


async def while_leader(lease: LeaderLease, lead: Callable[[], Awaitable[None]]) -> None:
    """Run ``lead()`` whenever this process holds the lease, cancelling it when the lease is
    lost, until cancelled; the lease is released on the way out."""
    try:
        while True:
            await lease.acquire()
            work = asyncio.ensure_future(lead())
            keeper = asyncio.ensure_future(lease.keep())
            try:
                done, _ = await asyncio.wait({work, keeper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (work, keeper):
                    task.cancel()
                await asyncio.gather(work, keeper, return_exceptions=True)
            if work in done:  # the leader's work ended by itself: an error to report
                work.result()
                return
            log.warning("lease %s lost: %s stands by", lease.name, lease.holder)
    finally:
        await lease.release()
