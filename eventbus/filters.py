"""Event filters in the CloudEvents Subscriptions API dialects, and an index over many of them.

A filter list is an implicit ``all``. Dialects: ``exact``, ``prefix`` and ``suffix`` map one
context attribute (core or extension) to a string; ``all`` and ``any`` take a non-empty list of
filters; ``not`` takes one filter. Attribute values compare as strings (a boolean extension as
``true``/``false``, the time as RFC 3339); a missing attribute matches no exact/prefix/suffix.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from eventbus.errors import ValidationFailedError
from eventbus.types import CloudEvent, format_time

Predicate = Callable[[CloudEvent], bool]
FilterList = list[dict[str, Any]]

STRING_DIALECTS: Final = ("exact", "prefix", "suffix")
DIALECTS: Final = (*STRING_DIALECTS, "all", "any", "not")
_ATTRIBUTE_NAME: Final = re.compile(r"^[a-z0-9]{1,20}$")
K = TypeVar("K", bound=Hashable)


def attribute_text(event: CloudEvent, name: str) -> str | None:
    """A context attribute's value as a string, or ``None`` when the event does not have it."""
    if name == "type":
        return event.type
    if name == "source":
        return event.source
    if name == "subject":
        return event.subject
    if name == "id":
        return event.id
    if name == "time":
        return format_time(event.time) if event.time is not None else None
    if name in ("specversion", "datacontenttype", "dataschema"):
        value: Any = getattr(event, name)
        return value if isinstance(value, str) else None
    ext = event.extensions.get(name)
    if ext is None or isinstance(ext, str):
        return ext
    if isinstance(ext, bool):
        return "true" if ext else "false"
    return str(ext)


def compile_filters(filters: list[dict[str, Any]]) -> Predicate:
    """Validate a filter list (an implicit ``all``) and compile it into a predicate."""
    if not isinstance(filters, list):
        raise _invalid("filters", "must be a list of filter expressions")
    parts = [_compile(item, f"filters[{i}]") for i, item in enumerate(filters)]
    return _all_of(parts)


def _invalid(path: str, message: str) -> ValidationFailedError:
    return ValidationFailedError(
        f"invalid filter at {path}: {message}",
        path=path,
        errors=[{"loc": path, "msg": message}],
    )


def _compile(expr: Any, path: str) -> Predicate:
    if not isinstance(expr, dict):
        raise _invalid(path, "a filter must be an object with one dialect key")
    if len(expr) != 1:
        raise _invalid(path, f"a filter must have exactly one dialect key of {', '.join(DIALECTS)}")
    ((dialect, value),) = expr.items()
    where = f"{path}.{dialect}"
    if dialect in STRING_DIALECTS:
        name, text = _attribute_pair(value, where)
        return _string_test(dialect, name, text)
    if dialect in ("all", "any"):
        if not isinstance(value, list) or not value:
            raise _invalid(where, "must be a non-empty list of filters")
        parts = [_compile(item, f"{where}[{i}]") for i, item in enumerate(value)]
        return _all_of(parts) if dialect == "all" else _any_of(parts)
    if dialect == "not":
        inner = _compile(value, where)
        return lambda event: not inner(event)
    raise _invalid(where, f"unknown dialect {dialect!r}: use one of {', '.join(DIALECTS)}")


def _attribute_pair(value: Any, where: str) -> tuple[str, str]:
    if not isinstance(value, dict) or len(value) != 1:
        raise _invalid(where, "must map exactly one attribute name to a string")
    ((name, text),) = value.items()
    if not isinstance(name, str) or not _ATTRIBUTE_NAME.fullmatch(name):
        raise _invalid(where, f"{name!r} is not a CloudEvents attribute name (1-20 of a-z, 0-9)")
    if not isinstance(text, str):
        raise _invalid(f"{where}.{name}", "the value must be a string")
    return name, text


def _string_test(dialect: str, name: str, text: str) -> Predicate:
    if dialect == "exact":

        def exact(event: CloudEvent) -> bool:
            return attribute_text(event, name) == text

        return exact
    if dialect == "prefix":

        def prefix(event: CloudEvent) -> bool:
            value = attribute_text(event, name)
            return value is not None and value.startswith(text)

        return prefix

    def suffix(event: CloudEvent) -> bool:
        value = attribute_text(event, name)
        return value is not None and value.endswith(text)

    return suffix


def _all_of(parts: list[Predicate]) -> Predicate:
    if len(parts) == 1:
        return parts[0]
    return lambda event: all(part(event) for part in parts)


def _any_of(parts: list[Predicate]) -> Predicate:
    if len(parts) == 1:
        return parts[0]
    return lambda event: any(part(event) for part in parts)


def storage_filters(
    *,
    bucket: str | None = None,
    key_prefix: str | None = None,
    key_suffix: str | None = None,
    event_types: list[str] | None = None,
) -> FilterList:
    """Filters for the storage shortcuts: bucket extension, key (subject) prefix/suffix, types."""
    out: FilterList = []
    if event_types:
        exact = [{"exact": {"type": t}} for t in event_types]
        out.append(exact[0] if len(exact) == 1 else {"any": exact})
    if bucket is not None:
        out.append({"exact": {"bucket": bucket}})
    if key_prefix:
        out.append({"prefix": {"subject": key_prefix}})
    if key_suffix:
        out.append({"suffix": {"subject": key_suffix}})
    return out


# -- the index ------------------------------------------------------------------------------

#: how a filter set is reached: ("exact"|"prefix", type value) alternatives, or None
TypeKeys = list[tuple[str, str]] | None


def _type_alternatives(expr: dict[str, Any]) -> TypeKeys:
    """Type conditions one of which every matching event meets, if the expression implies so."""
    ((dialect, value),) = expr.items()
    if dialect in ("exact", "prefix"):
        ((name, text),) = value.items()
        return [(dialect, text)] if name == "type" else None
    if dialect == "all":
        return _required_types(value)
    if dialect == "any":
        found: list[tuple[str, str]] = []
        for branch in value:
            alternatives = _type_alternatives(branch)
            if alternatives is None:
                return None  # one branch can match any type
            found += alternatives
        return found
    return None


def _required_types(filters: FilterList) -> TypeKeys:
    """The narrowest type alternatives implied by a conjunction (exact ones preferred)."""
    best: TypeKeys = None
    for expr in filters:
        alternatives = _type_alternatives(expr)
        if alternatives is None:
            continue
        if best is None or _rank(alternatives) < _rank(best):
            best = alternatives
    return best


def _rank(alternatives: list[tuple[str, str]]) -> tuple[int, int]:
    prefixes = [text for kind, text in alternatives if kind == "prefix"]
    return (1 if prefixes else 0, -min((len(p) for p in prefixes), default=0))


def _required_bucket(filters: FilterList) -> str | None:
    """An exact ``bucket`` every matching event has, if the conjunction requires one."""
    for expr in filters:
        ((dialect, value),) = expr.items()
        if dialect == "exact" and "bucket" in value:
            return str(value["bucket"])
        if dialect == "all":
            inner = _required_bucket(value)
            if inner is not None:
                return inner
    return None


@dataclass
class _Entry:
    predicate: Predicate
    slots: list[tuple[str, str | None, str | None]] = field(default_factory=list)


class FilterIndex(Generic[K]):
    """Filter sets by key; `match` runs predicates only on candidates found by type and bucket.

    Each set is filed under a type it requires (exact, or a prefix found by probing the event
    type's prefixes of the registered lengths) and, for storage events, the bucket it requires;
    sets with neither go to a residual list that every event checks.
    """

    def __init__(self) -> None:
        self._entries: dict[K, _Entry] = {}
        self._exact: dict[str, dict[str | None, set[K]]] = {}
        self._prefix: dict[str, dict[str | None, set[K]]] = {}
        self._prefix_lengths: Counter[int] = Counter()
        self._lengths: tuple[int, ...] = ()
        self._bucket_only: dict[str, set[K]] = {}
        self._residual: set[K] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def add(self, key: K, filters: FilterList) -> None:
        """Register (or replace) the filter set under ``key``; raises ValidationFailedError."""
        predicate = compile_filters(filters)
        self.remove(key)
        entry = _Entry(predicate)
        types = _required_types(filters)
        bucket = _required_bucket(filters)
        if types is None:
            entry.slots.append(("bucket", None, bucket) if bucket else ("residual", None, None))
        else:
            entry.slots.extend((kind, text, bucket) for kind, text in dict.fromkeys(types))
        for kind, text, bucket_key in entry.slots:
            self._file(key, kind, text, bucket_key, add=True)
        self._entries[key] = entry

    def remove(self, key: K) -> None:
        """Forget the filter set under ``key`` (nothing happens when there is none)."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            for kind, text, bucket in entry.slots:
                self._file(key, kind, text, bucket, add=False)

    def _file(self, key: K, kind: str, text: str | None, bucket: str | None, *, add: bool) -> None:
        if kind == "residual":
            (self._residual.add if add else self._residual.discard)(key)
            return
        if kind == "bucket":
            assert bucket is not None
            _update(self._bucket_only, bucket, key, add=add)
            return
        assert text is not None
        table = self._exact if kind == "exact" else self._prefix
        by_bucket = table.setdefault(text, {})
        _update(by_bucket, bucket, key, add=add)
        if not by_bucket:
            del table[text]
        if kind == "prefix":
            self._prefix_lengths[len(text)] += 1 if add else -1
            if self._prefix_lengths[len(text)] <= 0:
                del self._prefix_lengths[len(text)]
            self._lengths = tuple(sorted(self._prefix_lengths))

    def might_match_type(self, event_type: str) -> bool:
        """Whether any registered set could match an event of this type (a cheap pre-check)."""
        if self._residual or self._bucket_only or event_type in self._exact:
            return True
        return any(event_type[:n] in self._prefix for n in self._lengths if n <= len(event_type))

    def might_match_prefix(self, type_prefix: str) -> bool:
        """Whether any registered set could match an event whose type starts with
        ``type_prefix`` (sets that require no type, or only a bucket, could)."""
        if self._residual or self._bucket_only:
            return True
        return any(_overlaps(kind, text, type_prefix) for kind, text in self._type_slots())

    def keys_matching_prefix(self, type_prefix: str) -> set[K]:
        """The keys of the sets `might_match_prefix` is about."""
        return {
            key
            for key, entry in self._entries.items()
            if any(
                kind in ("residual", "bucket") or _overlaps(kind, text or "", type_prefix)
                for kind, text, _ in entry.slots
            )
        }

    def _type_slots(self) -> Iterator[tuple[str, str]]:
        yield from (("exact", text) for text in self._exact)
        yield from (("prefix", text) for text in self._prefix)

    def candidates(self, event: CloudEvent) -> set[K]:
        """Keys whose sets could match ``event`` (a superset of `match`)."""
        found = set(self._residual)
        bucket = attribute_text(event, "bucket")
        etype = event.type
        tables = [self._exact.get(etype)]
        tables += [self._prefix.get(etype[:n]) for n in self._lengths if n <= len(etype)]
        for by_bucket in tables:
            if by_bucket:
                found.update(by_bucket.get(None, ()))
                if bucket is not None:
                    found.update(by_bucket.get(bucket, ()))
        if bucket is not None:
            found.update(self._bucket_only.get(bucket, ()))
        return found

    def match(self, event: CloudEvent) -> set[K]:
        """Keys of every registered set that ``event`` satisfies."""
        entries = self._entries
        return {key for key in self.candidates(event) if entries[key].predicate(event)}


def filters_might_match_prefix(filters: FilterList, type_prefix: str) -> bool:
    """Whether ``filters`` could match an event whose type starts with ``type_prefix`` (they
    could unless they require types that all lie elsewhere)."""
    types = _required_types(filters)
    return types is None or any(_overlaps(kind, text, type_prefix) for kind, text in types)


def _overlaps(kind: str, text: str, type_prefix: str) -> bool:
    """Whether a type ``kind`` (exact or prefix) ``text`` admits a type under ``type_prefix``."""
    if kind == "exact":
        return text.startswith(type_prefix)
    return text.startswith(type_prefix) or type_prefix.startswith(text)


def _update(table: dict[Any, set[Any]], slot: Any, key: Any, *, add: bool) -> None:
    if add:
        table.setdefault(slot, set()).add(key)
        return
    keys = table.get(slot)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del table[slot]
