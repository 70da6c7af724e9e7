"""What a runner puts in a handler's context, made at its first use rather than at the start.

``ctx.event`` is a `CloudEvent` (a pydantic model) and ``ctx.storage`` a `ProxyStorage` (it
imports `eventbus.storage`, whose event records are models too). Built for every call, they
would load pydantic into every runner; these stand-ins build the real object the first time
a handler touches it and hand on every attribute, so a handler sees the same API.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventbus.types import CloudEvent
    from runtimes.sandbox.proxy import ProxyStorage, Send


class EventOnDemand:
    """``ctx.event``: the activation's `CloudEvent`, validated when first used."""

    def __init__(self, attributes: dict[str, Any], data: bytes) -> None:
        self._attributes = attributes
        self._data = data
        self._event: CloudEvent | None = None
        self._lock = threading.Lock()  # a sync handler's thread may be the first to use it

    def event(self) -> CloudEvent:
        """The event itself, built now if this is its first use."""
        with self._lock:
            if self._event is None:
                from runtimes.sandbox import wire

                self._event = wire.load_event(self._attributes, self._data)
                assert self._event is not None
            return self._event

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance(ctx.event, CloudEvent) holds as it did
        return type(self.event())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.event(), name)

    def __eq__(self, other: object) -> bool:
        other = other.event() if isinstance(other, EventOnDemand) else other
        return self.event() == other

    def __hash__(self) -> int:
        return hash(self.event())

    def __repr__(self) -> str:
        return repr(self.event())


class StorageOnDemand:
    """``ctx.storage``: the `ProxyStorage`, made when a handler first uses it."""

    def __init__(self, send: Send, loop: asyncio.AbstractEventLoop) -> None:
        self._send = send
        self._loop = loop
        self._proxy: ProxyStorage | None = None
        self._lock = threading.Lock()

    def proxy(self) -> ProxyStorage:
        """The proxy, made now if this is its first use."""
        with self._lock:
            if self._proxy is None:
                from runtimes.sandbox.proxy import ProxyStorage

                self._proxy = ProxyStorage(self._send, self._loop)
            return self._proxy

    def deliver(self, header: dict[str, Any], payload: bytes) -> None:
        """A frame from the worker for a storage call (there is none before the first use)."""
        if self._proxy is not None:
            self._proxy.deliver(header, payload)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.proxy(), name)
