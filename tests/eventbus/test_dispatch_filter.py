"""The subjects a dispatcher's consumer reads for a set of triggers (`eventbus.dispatch_filter`)."""

from __future__ import annotations

from typing import Any

from eventbus.dispatch_filter import (
    EVERYTHING,
    MAX_SUBJECTS,
    NOTHING,
    consumer_filter,
    trigger_subjects,
    uncovered,
)
from eventbus.schedules import Schedule
from eventbus.triggers import Trigger

P = "io.deepfaas"


def subjects(**kw: Any) -> frozenset[str] | None:
    return trigger_subjects(Trigger(name="t", function="f", **kw), P)


def test_each_kind_of_trigger_reads_the_subjects_its_events_are_stored_on() -> None:
    assert subjects(bucket="images") == {"events.storage.object.created"}
    assert subjects(event_types=[f"{P}.activation.completed", "com.example.a b"]) == {
        "events.activation.completed",
        "events.com.example.a_b",
    }
    assert subjects(filters=[{"prefix": {"type": f"{P}.storage."}}]) == {
        "events.storage.>",
        "events.storage",
    }
    assert subjects(filters=[{"prefix": {"type": "com.shop.ord"}}]) == {"events.com.shop.>"}
    # no type condition, a prefix the platform's types share, a token cut short: everything
    for filters in (
        [{"exact": {"source": "/x"}}],
        [{"prefix": {"type": "io.deep"}}],
        [{"prefix": {"type": "com"}}],
        [{"not": {"exact": {"type": "x.y"}}}],
        [{"exact": {"type": "a..b"}}],
    ):
        assert subjects(filters=filters) is None, filters
    assert subjects(schedule=Schedule(cron="* * * * *")) == frozenset()


def test_the_union_has_no_overlap_and_falls_back_to_everything() -> None:
    wanted = [
        frozenset({"events.storage.>", "events.storage"}),
        frozenset({"events.storage.object.created"}),
        frozenset({"events.x"}),
    ]
    assert consumer_filter(wanted) == ("events.storage", "events.storage.>", "events.x")
    assert consumer_filter([]) == NOTHING
    assert consumer_filter([*wanted, None]) == EVERYTHING
    many = [frozenset({f"events.t{i}"}) for i in range(MAX_SUBJECTS + 1)]
    assert consumer_filter(many) == EVERYTHING
    assert uncovered(frozenset({"events.a", "events.b.c"}), ("events.b.>",)) == {"events.a"}
    assert uncovered(None, ("events.a",)) == set(EVERYTHING)
    assert uncovered(None, EVERYTHING) == frozenset()
