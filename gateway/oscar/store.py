"""OSCAR services as recorded: the FDL as given, its token, and the token's index.

Kept in the `oscar` KV bucket: ``service.<internal name>`` holds the document and
``token.<sha256 of the token>`` the internal name, so that `/run` and `/job` find the service
a token belongs to (OSCAR's services each have a 64-hex token that invokes them alone).
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from typing import Any

import orjson
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from eventbus.connection import Bus
from eventbus.kv import entry
from eventbus.kv import keys as kv_keys
from eventbus.streams import OSCAR_KV, bind_bucket


def new_token() -> str:
    """A service token as OSCAR makes them: 64 hex characters."""
    return secrets.token_hex(32)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ServiceStore:
    """Service documents by internal name, and the token index."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._kv: KeyValue | None = None

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await bind_bucket(self.bus.js, OSCAR_KV)
        return self._kv

    async def get(self, name: str) -> dict[str, Any] | None:
        """The document of the service with internal name ``name``, or None."""
        found = await entry(await self._bucket(), f"service.{name}")
        if found is None or not found.value:
            return None
        doc: dict[str, Any] = orjson.loads(found.value)
        return doc

    async def put(self, name: str, doc: dict[str, Any]) -> None:
        """Write the document and index its token."""
        kv = await self._bucket()
        await kv.put(f"token.{_digest(doc['token'])}", name.encode())
        await kv.put(f"service.{name}", orjson.dumps(doc))

    async def delete(self, name: str) -> None:
        """Forget the service and its token (absent is fine)."""
        kv = await self._bucket()
        doc = await self.get(name)
        with contextlib.suppress(KeyNotFoundError):
            if doc is not None:
                await kv.delete(f"token.{_digest(doc['token'])}")
            await kv.delete(f"service.{name}")

    async def by_token(self, token: str) -> str | None:
        """The internal name of the service ``token`` invokes, or None."""
        found = await entry(await self._bucket(), f"token.{_digest(token)}")
        return found.value.decode() if found is not None and found.value else None

    async def names(self) -> list[str]:
        """Internal names of every service."""
        keys = await kv_keys(await self._bucket())
        return sorted(k.removeprefix("service.") for k in keys if k.startswith("service."))
