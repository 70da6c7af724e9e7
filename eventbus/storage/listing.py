"""S3 listing semantics shared by backends: grouping into common prefixes, paging.

Keys holding the delimiter after the prefix collapse into their common prefix, as S3 does.
Entries (keys and prefixes) that do not sort after ``start_after`` are skipped, so a page's
``next_marker`` (its last entry) resumes right after it, prefix or key; a source told of each
common prefix met (``on_prefix``) can skip the keys under it.

S3 orders keys by their UTF-8 bytes, which is code point order. In a directory tree a folder
sorts as its name plus ``/``, which is where its keys sort; folders wholly outside the prefix,
before ``start_after`` or under a skipped prefix are never read; symbolic links are ignored.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Page(Generic[T]):
    """One page as ``paginate`` builds it, before a backend turns items into summaries."""

    objects: list[T] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    is_truncated: bool = False
    next_marker: str | None = None


def paginate(
    items: Iterable[tuple[str, T | None]],
    *,
    prefix: str,
    delimiter: str | None,
    start_after: str | None,
    limit: int,
    on_prefix: Callable[[str], None] | None = None,
) -> Page[T]:
    """Cut one page from ``(key, item)`` pairs in key order (item None: a common prefix)."""
    page: Page[T] = Page()
    last_prefix: str | None = None
    page_last: str | None = None
    count = 0
    for key, item in items:
        name = key
        if item is not None and delimiter:
            cut = key.find(delimiter, len(prefix))
            if cut >= 0:
                name, item = key[: cut + len(delimiter)], None
        if item is None:
            if name == last_prefix:
                continue
            last_prefix = name
            if on_prefix is not None:
                on_prefix(name)
        if start_after is not None and name <= start_after:
            continue
        if count == limit:
            page.is_truncated = True
            page.next_marker = page_last
            return page
        count += 1
        page_last = name
        if item is None:
            page.prefixes.append(name)
        else:
            page.objects.append(item)
    return page


def walk_tree(
    directory: str,
    *,
    prefix: str,
    start_after: str | None,
    skip: list[str],
    accept: Callable[[str], bool],
    rel: str = "",
) -> Iterator[str]:
    """Keys of the files under ``directory`` in key order, lazily, reading only needed folders."""
    entries: list[tuple[str, str, bool]] = []
    try:
        with os.scandir(directory) as scan:
            for entry in scan:
                if entry.is_dir(follow_symlinks=False):
                    entries.append((rel + entry.name + "/", entry.path, True))
                elif entry.is_file(follow_symlinks=False):
                    entries.append((rel + entry.name, entry.path, False))
    except (FileNotFoundError, NotADirectoryError):
        return  # removed while we walked
    for name, path, is_dir in sorted(entries):
        if skip and name.startswith(skip[0]):
            continue
        if not is_dir:
            after = start_after is None or name > start_after
            if name.startswith(prefix) and after and accept(name):
                yield name
            continue
        if not (name.startswith(prefix) or prefix.startswith(name)):
            continue
        if start_after is not None and start_after > name and not start_after.startswith(name):
            continue  # every key in this folder sorts before start_after
        yield from walk_tree(
            path, prefix=prefix, start_after=start_after, skip=skip, accept=accept, rel=name
        )
