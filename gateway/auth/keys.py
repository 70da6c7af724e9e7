"""API keys in OpenWhisk's `uuid:key` form, stored hashed in the `auth_keys` KV bucket.

The uuid is the lookup id (the KV key); the secret is 64 random letters and digits, stored
only as HMAC-SHA256 under a per-key random salt. Secrets this long need no slow hash: the
salt stops precomputation and the entropy stops guessing. Checks read a cache that a KV watch
keeps current (any change to a key drops it from every gateway's cache; a revoke through this
gateway drops it at once), so a revoked key is refused from the next request on without a KV
round trip on every request. Without a running watch every check reads KV.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import string
import uuid
from datetime import UTC, datetime

from nats.js.kv import KeyValue

from eventbus.connection import Bus
from eventbus.errors import NotFoundError
from eventbus.kv import keys as kv_keys
from eventbus.kv import read
from eventbus.namespaces import is_name
from eventbus.streams import AUTH_KV, bind_bucket
from gateway.auth.errors import AuthError
from gateway.auth.types import ApiKey, KeyInfo, Principal

log = logging.getLogger(__name__)
SECRET_ALPHABET = string.ascii_letters + string.digits
SECRET_LENGTH = 64
_DUMMY_SALT = secrets.token_bytes(16)


def new_secret() -> str:
    """A fresh random key secret."""
    return "".join(secrets.choice(SECRET_ALPHABET) for _ in range(SECRET_LENGTH))


def digest(secret: str, salt: bytes) -> str:
    """The stored form of a secret."""
    return hmac.new(salt, secret.encode(), hashlib.sha256).hexdigest()


def parse_credential(text: str) -> tuple[str, str]:
    """``(uuid, secret)`` of a ``uuid:key`` credential; `AuthError` if it is not one."""
    key_id, sep, secret = text.strip().partition(":")
    try:
        uuid.UUID(key_id)
    except ValueError as exc:
        raise AuthError("the credential must be `uuid:key`") from exc
    if not sep or not secret:
        raise AuthError("the credential must be `uuid:key`")
    return key_id.lower(), secret


class KeyStore:
    """Create, list, revoke and check API keys."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._kv: KeyValue | None = None
        self._cache: dict[str, ApiKey] = {}
        self._watch: asyncio.Task[None] | None = None
        self._watching = False

    async def start(self) -> None:
        """Watch the bucket so that checks can use the cache."""
        if self._watch is None:
            self._watch = asyncio.create_task(self._watch_changes(), name="auth-key-watch")

    async def stop(self) -> None:
        """Stop watching; checks read KV again."""
        self._watching = False
        self._cache.clear()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None

    async def _watch_changes(self) -> None:
        while True:
            try:
                watcher = await (await self._bucket()).watchall(include_history=False)
                async for entry in watcher:
                    if entry is None:  # initial values delivered: from now on, changes
                        self._watching = True
                        continue
                    self._cache.pop(entry.key, None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("auth key watch interrupted (checks read KV meanwhile): %s", exc)
            finally:
                self._watching = False
                self._cache.clear()
            await asyncio.sleep(1.0)

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await bind_bucket(self.bus.js, AUTH_KV)
        return self._kv

    async def create(self, namespace: str, description: str = "") -> tuple[KeyInfo, str]:
        """A new key for ``namespace``; returns it and its ``uuid:key`` credential (shown once)."""
        if not is_name(namespace):
            raise ValueError(f"not a valid namespace: {namespace!r}")
        key_id, secret, salt = str(uuid.uuid4()), new_secret(), secrets.token_bytes(16)
        stored = ApiKey(
            uuid=key_id,
            namespace=namespace,
            description=description,
            created=datetime.now(UTC),
            salt=salt.hex(),
            digest=digest(secret, salt),
        )
        await (await self._bucket()).create(key_id, stored.model_dump_json().encode())
        return KeyInfo.model_validate(stored.model_dump()), f"{key_id}:{secret}"

    async def get(self, key_id: str) -> ApiKey:
        """The stored key, or `NotFoundError`."""
        found = await read(await self._bucket(), key_id, ApiKey)
        if found is None:
            raise NotFoundError(f"key {key_id!r} does not exist", key=key_id)
        return found[0]

    async def list(self, namespace: str | None = None) -> list[KeyInfo]:
        """Every key (of one namespace), oldest first, without secrets."""
        kv = await self._bucket()
        ids = await kv_keys(kv)
        found = []
        for key_id in ids:
            try:
                stored = await self.get(key_id)
            except NotFoundError:
                continue
            if namespace is None or stored.namespace == namespace:
                found.append(KeyInfo.model_validate(stored.model_dump()))
        return sorted(found, key=lambda k: k.created)

    async def revoke(self, key_id: str) -> KeyInfo:
        """Mark the key revoked; it is refused from the next request on."""
        self._cache.pop(key_id, None)
        stored = await self.get(key_id)
        if stored.revoked is None:
            stored = stored.model_copy(update={"revoked": datetime.now(UTC)})
            await (await self._bucket()).put(key_id, stored.model_dump_json().encode())
            self._cache.pop(key_id, None)
        return KeyInfo.model_validate(stored.model_dump())

    async def namespaces(self) -> set[str]:
        """Namespaces that hold at least one live key."""
        return {k.namespace for k in await self.list() if k.revoked is None}

    async def verify(self, credential: str) -> Principal:
        """The caller of a ``uuid:key`` credential; `AuthError` for anything not live and right."""
        key_id, secret = parse_credential(credential)
        try:
            stored = self._cache.get(key_id) if self._watching else None
            if stored is None:
                stored = await self.get(key_id)
                if self._watching:
                    self._cache[key_id] = stored
        except NotFoundError:
            hmac.compare_digest(digest(secret, _DUMMY_SALT), "0" * 64)  # same work either way
            raise AuthError("unknown or revoked API key") from None
        good = hmac.compare_digest(digest(secret, bytes.fromhex(stored.salt)), stored.digest)
        if not good or stored.revoked is not None:
            raise AuthError("unknown or revoked API key")
        return Principal(namespace=stored.namespace, subject=key_id, method="basic")
