"""Namespaces: how a (namespace, name) pair becomes one internal name, and back.

The default namespace keeps bare names, so data stored before namespaces existed stays
where it was. Any other namespace qualifies a name as ``<namespace>=<name>``. User names
(functions, triggers, rules, namespaces) match ``[a-z0-9][a-z0-9_-]*`` and so never hold
``=``; a qualified name is still a valid KV key, NATS subject token and JetStream durable
name (no ``.``, ``*``, ``>``, ``/`` or whitespace), and can never collide with a bare one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

DEFAULT_NAMESPACE: Final = "default"
SEPARATOR: Final = "="
NAME: Final = r"[a-z0-9][a-z0-9_-]{0,62}"
NAMESPACE_PATTERN: Final = rf"^{NAME}$"
QUALIFIED_NAME_PATTERN: Final = rf"^({NAME}{SEPARATOR})?{NAME}$"
_NAME = re.compile(NAMESPACE_PATTERN)
_QUALIFIED = re.compile(QUALIFIED_NAME_PATTERN)


def is_name(text: str) -> bool:
    """Whether ``text`` is a valid user name or namespace."""
    return _NAME.fullmatch(text) is not None  # `match` let a trailing newline through (`$`)


def is_qualified_name(text: str) -> bool:
    """Whether ``text`` is an internal name (``name`` or ``namespace=name``), nothing more."""
    return _QUALIFIED.fullmatch(text) is not None


def qualify(namespace: str, name: str) -> str:
    """The internal name of ``name`` in ``namespace``."""
    if not is_name(namespace) or not is_name(name):
        raise ValueError(f"not a valid namespace and name: {namespace!r}, {name!r}")
    return name if namespace == DEFAULT_NAMESPACE else f"{namespace}{SEPARATOR}{name}"


def split(qualified: str) -> tuple[str, str]:
    """``(namespace, name)`` of an internal name."""
    namespace, sep, name = qualified.partition(SEPARATOR)
    return (namespace, name) if sep else (DEFAULT_NAMESPACE, qualified)


def namespace_of(qualified: str) -> str:
    """The namespace an internal name belongs to."""
    return split(qualified)[0]


def local_name(qualified: str) -> str:
    """The name as its namespace sees it."""
    return split(qualified)[1]


def belongs(qualified: str, namespace: str) -> bool:
    """Whether the internal name lies in ``namespace``."""
    return namespace_of(qualified) == namespace


#: the CloudEvent extension attribute that names the namespace an event belongs to; set by the
#: platform (the bucket owner for storage events, the caller for posted events), never trusted
#: from a client
EVENT_ATTRIBUTE: Final = "namespace"


def event_namespace(extensions: Mapping[str, object]) -> str:
    """The namespace of an event from its extension attributes (none: ``default``)."""
    value = extensions.get(EVENT_ATTRIBUTE)
    return value if isinstance(value, str) and value else DEFAULT_NAMESPACE
