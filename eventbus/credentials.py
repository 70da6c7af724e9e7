"""Bus credentials: what a connection presents, and the generated ones of each platform role.

The embedded nats-server authorises NATS users with passwords and per-role permissions
(`eventbus.permissions`). Their passwords are generated on first start and kept, mode 0600, one
file per role under ``<store dir>/credentials/``; later starts reuse them.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import ssl
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from eventbus.errors import BusUnavailableError
from eventbus.permissions import ROLES, inbox_prefix, role_permissions
from eventbus.subjects import INBOX_ROOT


@dataclass(frozen=True)
class BusAuth:
    """What a connection presents to NATS: user/password or a .creds file, and TLS."""

    user: str | None = None
    password: str | None = None
    creds: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    inbox_prefix: str = INBOX_ROOT

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect``."""
        options: dict[str, Any] = {"inbox_prefix": self.inbox_prefix}
        if self.user is not None:
            options["user"] = self.user
            options["password"] = self.password or ""
        if self.creds is not None:
            if importlib.util.find_spec("nkeys") is None:  # nats-py signs with it, lazily
                raise BusUnavailableError(
                    f"a .creds file ({self.creds}) needs the nkeys package: pip install nkeys"
                )
            options["user_credentials"] = str(self.creds)
        if self.tls_ca is not None or self.tls_cert is not None:
            context = ssl.create_default_context(
                cafile=str(self.tls_ca) if self.tls_ca is not None else None
            )
            if self.tls_cert is not None:
                key = str(self.tls_key) if self.tls_key is not None else None
                context.load_cert_chain(str(self.tls_cert), key)
            options["tls"] = context
        return options

    def env(self) -> dict[str, str]:
        """The ``DEEPFAAS_NATS_*`` environment that gives a child process these credentials."""
        return {
            "DEEPFAAS_NATS_USER": self.user or "",
            "DEEPFAAS_NATS_PASSWORD": self.password or "",
            "DEEPFAAS_NATS_CREDS": str(self.creds) if self.creds is not None else "",
            "DEEPFAAS_NATS_INBOX_PREFIX": self.inbox_prefix,
            "DEEPFAAS_NATS_CREDENTIALS_DIR": "",
            "DEEPFAAS_NATS_TLS_CA": str(self.tls_ca) if self.tls_ca is not None else "",
            "DEEPFAAS_NATS_TLS_CERT": str(self.tls_cert) if self.tls_cert is not None else "",
            "DEEPFAAS_NATS_TLS_KEY": str(self.tls_key) if self.tls_key is not None else "",
        }


@dataclass(frozen=True)
class RoleCredentials:
    """The generated password of every platform role, kept in one directory."""

    directory: Path
    passwords: Mapping[str, str]

    @classmethod
    def ensure(cls, directory: Path) -> RoleCredentials:
        """Load the roles' credentials, generating (0600) those that do not exist yet."""
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        for role in ROLES:
            path = _role_file(directory, role)
            if not path.exists():
                body = {"user": role, "password": secrets.token_urlsafe(32)}
                write_private(path, orjson.dumps(body, option=orjson.OPT_INDENT_2))
        return cls.load(directory)

    @classmethod
    def load(cls, directory: Path, roles: Iterable[str] = ROLES) -> RoleCredentials:
        """Read the ``roles``' credentials (written by `ensure`), or raise.

        A process reads only the roles it connects as, so a directory may hold just those
        (a Kubernetes pod mounts only its own roles' files from the Secret).
        """
        passwords: dict[str, str] = {}
        for role in roles:
            path = _role_file(directory, role)
            try:
                body = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError) as exc:
                raise BusUnavailableError(
                    f"no credentials of bus role {role!r} in {directory}: {exc}"
                ) from exc
            passwords[role] = str(body["password"])
        return cls(directory, passwords)

    def auth(self, role: str, *, tls: BusAuth | None = None) -> BusAuth:
        """The credentials of one role (with the TLS files of ``tls``, if given)."""
        if role not in self.passwords:
            raise ValueError(f"unknown bus role {role!r}; roles: {', '.join(ROLES)}")
        return BusAuth(
            user=role,
            password=self.passwords[role],
            tls_ca=tls.tls_ca if tls else None,
            tls_cert=tls.tls_cert if tls else None,
            tls_key=tls.tls_key if tls else None,
            inbox_prefix=inbox_prefix(role),
        )

    def authorization(self) -> dict[str, Any]:
        """The server config's ``authorization`` block: one user per role."""
        users = [
            {"user": role, "password": self.passwords[role], **_permissions(role)} for role in ROLES
        ]
        return {"users": users}


def _permissions(role: str) -> dict[str, Any]:
    return {"permissions": role_permissions(role).config()}


def _role_file(directory: Path, role: str) -> Path:
    return directory / f"{role}.json"


def write_private(path: Path, data: bytes) -> None:
    """Write a file that only its owner may read (0600 from the start, replaced atomically)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)
