"""The subjects the dispatcher's consumer reads: those of the events its triggers can match.

Events are stored on ``events.<type less the prefix>`` (`eventbus.subjects.event_subject`), so a
trigger that requires an exact type (``event_types``, the storage shortcuts, an ``exact`` type
filter) or a type prefix needs only that subject, or the subjects under the prefix's whole
tokens. The consumer filters on the union (the server skips the rest: the dispatcher no longer
reads every `activation.completed` no trigger wants); a trigger that can match any type
(no type condition, a ``not``, a prefix shorter than a token) makes it read everything, as do
more than `MAX_SUBJECTS` subjects. The index still decides what matches: a subject read is a
superset of what its triggers want, never less.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from eventbus.filters import _required_types
from eventbus.subjects import ALL_EVENTS, EVENTS_ROOT, event_subject
from eventbus.triggers import Trigger

Subjects = tuple[str, ...]
#: read every event
EVERYTHING: Final[Subjects] = (ALL_EVENTS,)
#: what a dispatcher reads when no trigger matches events: a subject no platform event uses
#: (an event that lands there is matched like any other, and matches nothing)
NOTHING: Final[Subjects] = (f"{EVENTS_ROOT}._no_trigger_",)
#: past this many subjects the consumer reads everything
MAX_SUBJECTS: Final = 64
_TOKEN: Final = re.compile(r"[A-Za-z0-9_\-]+")


def trigger_subjects(trigger: Trigger, prefix: str) -> frozenset[str] | None:
    """The subjects of every event that can fire ``trigger``; None when any subject can."""
    if not trigger.matches_events:
        return frozenset()
    alternatives = _required_types(trigger.effective_filters(prefix))
    if alternatives is None:
        return None
    found: set[str] = set()
    for kind, text in alternatives:
        subjects = _of_type(text, prefix) if kind == "exact" else _of_prefix(text, prefix)
        if subjects is None:
            return None
        found |= subjects
    return frozenset(found)


def consumer_filter(wanted: Iterable[frozenset[str] | None]) -> Subjects:
    """The consumer's filter subjects for these triggers' subjects: sorted, none overlapping
    another (the server refuses overlaps)."""
    union: set[str] = set()
    for subjects in wanted:
        if subjects is None:
            return EVERYTHING
        union |= subjects
    if not union:
        return NOTHING
    kept = sorted(s for s in union if not any(o != s and covers(o, s) for o in union))
    return EVERYTHING if len(kept) > MAX_SUBJECTS else tuple(kept)


def uncovered(subjects: frozenset[str] | None, read: Subjects) -> frozenset[str]:
    """Which of ``subjects`` (None: every one) a consumer filtering on ``read`` did not read."""
    if subjects is None:
        return frozenset() if read == EVERYTHING else frozenset(EVERYTHING)
    return frozenset(s for s in subjects if not any(covers(r, s) for r in read))


def covers(pattern: str, subject: str) -> bool:
    """Whether every subject that ``subject`` (itself a pattern of ours) matches, ``pattern``
    matches too (ours end in ``>`` or hold no wildcard)."""
    if pattern == subject:
        return True
    return pattern.endswith(".>") and subject.startswith(pattern[:-1])


def _of_type(event_type: str, prefix: str) -> set[str] | None:
    subject = event_subject(event_type, prefix)
    return {subject} if _valid(subject) else None


def _of_prefix(text: str, prefix: str) -> set[str] | None:
    """Subjects of the types that start with ``text``: under its whole tokens."""
    platform = prefix + "."
    if text.startswith(platform):
        rest = text[len(platform) :]
    elif platform.startswith(text):
        return None  # the platform's types too, whose subjects drop the prefix
    else:
        rest = text
    head, dot, tail = rest.rpartition(".")
    subject = f"{EVENTS_ROOT}.{head}"
    if not dot or not _valid(subject):
        return None
    # a type that is exactly ``<head>.`` is stored on ``events.<head>`` (trailing dots dropped)
    return {f"{subject}.>", subject} if not tail else {f"{subject}.>"}


def _valid(subject: str) -> bool:
    return all(_TOKEN.fullmatch(token) for token in subject.split("."))
