"""The first key: `deepfaas up` makes one for the default namespace and keeps it in a file."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from eventbus.connection import Bus
from eventbus.namespaces import DEFAULT_NAMESPACE
from gateway.auth.errors import AuthError
from gateway.auth.keys import KeyStore

AUTH_FILE = "auth"


def auth_file(data_dir: Path) -> Path:
    """Where `up` keeps the default namespace's credential (mode 0600)."""
    return data_dir / AUTH_FILE


async def ensure_first_key(bus: Bus, data_dir: Path) -> str | None:
    """Create and store a default-namespace key unless the file holds a live one.

    Returns the new ``uuid:key`` credential (to print once), or None if the file's key works.
    """
    path = auth_file(data_dir)
    keys = KeyStore(bus)
    kept = _read(path)
    if kept:
        with contextlib.suppress(AuthError):
            principal = await keys.verify(kept)
            if principal.namespace == DEFAULT_NAMESPACE:
                return None
    _, credential = await keys.create(DEFAULT_NAMESPACE, description="created by deepfaas up")
    _write(path, credential)
    return credential


def _read(path: Path) -> str:
    return path.read_text().strip() if path.is_file() else ""


def _write(path: Path, credential: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(credential + "\n")
    path.chmod(0o600)
