"""What OpenWhisk has and our native objects do not: action parameters, and triggers.

Kept in the `openwhisk` KV bucket under ``action.<internal name>`` and ``trigger.<internal
name>``; the action itself is the native function, a rule is a native trigger.
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from eventbus.connection import Bus
from eventbus.kv import entry
from eventbus.kv import keys as kv_keys
from eventbus.streams import OPENWHISK_KV, bind_bucket


class OpenWhiskStore:
    """JSON documents by kind and internal name."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._kv: KeyValue | None = None

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await bind_bucket(self.bus.js, OPENWHISK_KV)
        return self._kv

    async def get(self, kind: str, name: str) -> dict[str, Any] | None:
        """The document, or None."""
        found = await entry(await self._bucket(), f"{kind}.{name}")
        if found is None or not found.value:
            return None
        doc: dict[str, Any] = orjson.loads(found.value)
        return doc

    async def put(self, kind: str, name: str, doc: dict[str, Any]) -> None:
        """Write the document."""
        await (await self._bucket()).put(f"{kind}.{name}", orjson.dumps(doc))

    async def delete(self, kind: str, name: str) -> None:
        """Forget the document (absent is fine)."""
        kv = await self._bucket()
        with contextlib.suppress(KeyNotFoundError):
            await kv.delete(f"{kind}.{name}")

    async def names(self, kind: str) -> list[str]:
        """Internal names of every document of one kind."""
        kv = await self._bucket()
        keys = await kv_keys(kv)
        prefix = f"{kind}."
        return sorted(k[len(prefix) :] for k in keys if k.startswith(prefix))
