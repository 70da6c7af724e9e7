"""Filters (CloudEvents Subscriptions API dialects), the filter index and the trigger model."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from eventbus.errors import ValidationFailedError
from eventbus.filters import FilterIndex, compile_filters, filters_might_match_prefix
from eventbus.triggers import Trigger, check_key_template, render_key, storage_object
from eventbus.types import CloudEvent

PREFIX = "io.deepfaas"
CREATED = f"{PREFIX}.storage.object.created"


def event(**attrs: Any) -> CloudEvent:
    fields: dict[str, Any] = {"id": "e1", "source": "/storage/local/images", "type": CREATED}
    extensions = attrs.pop("extensions", {})
    fields.update(attrs)
    return CloudEvent(**fields, extensions=extensions)


def matches(filters: list[dict[str, Any]], ev: CloudEvent) -> bool:
    return compile_filters(filters)(ev)


# -- dialects -------------------------------------------------------------------------------


def test_exact_prefix_suffix_on_core_attributes() -> None:
    ev = event(subject="in/cat.jpg")
    assert matches([{"exact": {"type": CREATED}}], ev)
    assert not matches([{"exact": {"type": CREATED + "x"}}], ev)
    assert not matches([{"exact": {"type": CREATED.upper()}}], ev)  # case-sensitive
    assert matches([{"prefix": {"source": "/storage/"}}], ev)
    assert not matches([{"prefix": {"source": "/storagex"}}], ev)
    assert matches([{"suffix": {"subject": ".jpg"}}], ev)
    assert not matches([{"suffix": {"subject": ".png"}}], ev)
    assert matches([{"exact": {"specversion": "1.0"}}], ev)
    assert matches([{"exact": {"id": "e1"}}], ev)


def test_extensions_compare_as_strings() -> None:
    ev = event(extensions={"bucket": "images", "tries": 3, "urgent": True})
    assert matches([{"exact": {"bucket": "images"}}], ev)
    assert matches([{"exact": {"tries": "3"}}], ev)
    assert matches([{"exact": {"urgent": "true"}}], ev)
    assert not matches([{"exact": {"urgent": "True"}}], ev)
    assert matches([{"prefix": {"bucket": "im"}}, {"suffix": {"bucket": "ges"}}], ev)


def test_time_compares_as_rfc3339_text() -> None:
    ev = event(time=datetime(2026, 11, 3, 10, 0, 0, tzinfo=UTC))
    assert matches([{"prefix": {"time": "2026-11-03T"}}], ev)
    assert matches([{"suffix": {"time": "Z"}}], ev)


def test_a_missing_attribute_never_matches_exact_prefix_or_suffix() -> None:
    ev = event()
    for dialect in ("exact", "prefix", "suffix"):
        assert not matches([{dialect: {"subject": ""}}], ev)
        assert not matches([{dialect: {"bucket": ""}}], ev)
        assert matches([{"not": {dialect: {"bucket": ""}}}], ev)
    assert matches([{"prefix": {"subject": ""}}], event(subject="x"))  # present: matches


def test_list_is_an_implicit_all_and_empty_list_matches_everything() -> None:
    ev = event(subject="a.txt")
    assert matches([], ev)
    assert matches([{"exact": {"type": CREATED}}, {"suffix": {"subject": ".txt"}}], ev)
    assert not matches([{"exact": {"type": CREATED}}, {"suffix": {"subject": ".csv"}}], ev)


def test_nested_all_any_not() -> None:
    expr = {
        "any": [
            {"all": [{"prefix": {"subject": "in/"}}, {"not": {"suffix": {"subject": ".tmp"}}}]},
            {"exact": {"bucket": "urgent"}},
        ]
    }
    assert matches([expr], event(subject="in/a.jpg"))
    assert not matches([expr], event(subject="in/a.tmp"))
    assert not matches([expr], event(subject="out/a.jpg"))
    assert matches([expr], event(subject="out/a.tmp", extensions={"bucket": "urgent"}))
    assert matches([{"not": {"not": {"exact": {"id": "e1"}}}}], event())
    assert not matches([{"all": [{"exact": {"id": "e1"}}, {"exact": {"id": "e2"}}]}], event())


BAD_FILTERS: list[tuple[Any, str]] = [
    ("type", "filters"),
    ([["exact"]], "filters[0]"),
    ([{}], "filters[0]"),
    ([{"exact": {"type": "a"}, "prefix": {"type": "a"}}], "filters[0]"),
    ([{"sql": "type = 'a'"}], "filters[0].sql"),
    ([{"exact": {}}], "filters[0].exact"),
    ([{"exact": {"type": "a", "source": "b"}}], "filters[0].exact"),
    ([{"exact": "type"}], "filters[0].exact"),
    ([{"prefix": {"Type": "a"}}], "filters[0].prefix"),
    ([{"suffix": {"a" * 21: "a"}}], "filters[0].suffix"),
    ([{"exact": {"type\n": "a"}}], "filters[0].exact"),
    ([{"exact": {"type": 5}}], "filters[0].exact.type"),
    ([{"exact": {"type": None}}], "filters[0].exact.type"),
    ([{"all": []}], "filters[0].all"),
    ([{"any": {"exact": {"type": "a"}}}], "filters[0].any"),
    (
        [{"exact": {"id": "x"}}, {"any": [{"exact": {"id": "x"}}, {"prefx": {}}]}],
        "filters[1].any[1].prefx",
    ),
    ([{"not": [{"exact": {"id": "x"}}]}], "filters[0].not"),
    ([{"not": {"all": [{"not": {"exact": {"id": 1}}}]}}], "filters[0].not.all[0].not.exact.id"),
]


@pytest.mark.parametrize(("filters", "path"), BAD_FILTERS)
def test_invalid_filters_are_rejected_with_the_path(filters: Any, path: str) -> None:
    with pytest.raises(ValidationFailedError) as info:
        compile_filters(filters)
    assert info.value.fields["path"] == path
    assert path in str(info.value)
    assert info.value.code == "invalid"


# -- the index ------------------------------------------------------------------------------

TYPES = [CREATED, f"{PREFIX}.storage.object.deleted", f"{PREFIX}.activation.completed", "x.y"]
BUCKETS = ["b0", "b1", "b2"]
SUBJECTS = ["in/a.jpg", "in/b.png", "out/c.jpg", "d.txt"]


def _random_leaf(rng: random.Random) -> dict[str, Any]:
    attr = rng.choice(["type", "type", "bucket", "subject", "source"])
    values = {
        "type": [*TYPES, PREFIX + ".", PREFIX + ".storage.", "x"],
        "bucket": BUCKETS,
        "subject": [*SUBJECTS, "in/", ".jpg"],
        "source": ["/s/b0", "/s/"],
    }[attr]
    return {rng.choice(["exact", "exact", "prefix", "suffix"]): {attr: rng.choice(values)}}


def _random_expr(rng: random.Random, depth: int) -> dict[str, Any]:
    roll = rng.random()
    if depth <= 0 or roll < 0.5:
        return _random_leaf(rng)
    if roll < 0.7:
        return {"any": [_random_expr(rng, depth - 1) for _ in range(rng.randint(1, 3))]}
    if roll < 0.9:
        return {"all": [_random_expr(rng, depth - 1) for _ in range(rng.randint(1, 3))]}
    return {"not": _random_expr(rng, depth - 1)}


def _random_event(rng: random.Random, n: int) -> CloudEvent:
    ext = {"bucket": rng.choice(BUCKETS)} if rng.random() < 0.7 else {}
    return CloudEvent(
        id=f"e{n}",
        source=rng.choice(["/s/b0", "/s/b1", "/other"]),
        type=rng.choice(TYPES),
        subject=rng.choice([*SUBJECTS, None]),
        extensions=ext,
    )


def test_index_matches_exactly_what_a_brute_force_scan_matches() -> None:
    rng = random.Random(20261103)
    index: FilterIndex[int] = FilterIndex()
    registered: dict[int, list[dict[str, Any]]] = {}
    for round_ in range(30):
        for _ in range(40):
            key = rng.randrange(400)
            if key in registered and rng.random() < 0.3:
                index.remove(key)
                del registered[key]
                continue
            filters = [_random_expr(rng, 3) for _ in range(rng.randint(1, 3))]
            index.add(key, filters)
            registered[key] = filters
        predicates = {k: compile_filters(f) for k, f in registered.items()}
        for n in range(60):
            ev = _random_event(rng, round_ * 100 + n)
            expected = {k for k, p in predicates.items() if p(ev)}
            assert index.match(ev) == expected, (ev, expected)
            assert index.candidates(ev) >= expected
            if expected:
                assert index.might_match_type(ev.type)
    assert len(index) == len(registered)


def test_index_candidates_do_not_grow_with_unrelated_triggers() -> None:
    index: FilterIndex[str] = FilterIndex()
    for i in range(10_000):
        index.add(f"t{i}", [{"exact": {"type": CREATED}}, {"exact": {"bucket": f"b{i}"}}])
    index.add(
        "any-png", [{"prefix": {"type": PREFIX + ".storage."}}, {"suffix": {"subject": ".png"}}]
    )
    index.add("deleted", [{"any": [{"exact": {"type": "a"}}, {"exact": {"type": "b"}}]}])
    ev = event(subject="x.jpg", extensions={"bucket": "b42"})
    assert index.candidates(ev) == {"t42", "any-png"}
    assert index.match(ev) == {"t42"}
    assert index.match(event(subject="x.png", extensions={"bucket": "b7"})) == {"t7", "any-png"}
    assert index.candidates(event(type="b")) == {"deleted"}
    assert not index.might_match_type(f"{PREFIX}.activation.completed")
    index.remove("t42")
    index.remove("t42")  # removing twice is harmless
    assert index.match(ev) == set()
    index.add("everything", [{"not": {"exact": {"type": "never"}}}])  # nothing indexable
    assert index.might_match_type(f"{PREFIX}.activation.completed")
    assert index.match(event(type=f"{PREFIX}.activation.completed")) == {"everything"}


def test_index_add_replaces_and_rejects_bad_filters() -> None:
    index: FilterIndex[str] = FilterIndex()
    index.add("t", [{"exact": {"type": "a"}}])
    index.add("t", [{"exact": {"type": "b"}}])
    assert index.match(event(type="a")) == set()
    assert index.match(event(type="b")) == {"t"}
    with pytest.raises(ValidationFailedError):
        index.add("u", [{"exact": {"type": 1}}])
    assert "u" not in index and len(index) == 1


# -- the trigger model ----------------------------------------------------------------------


def test_whether_any_set_could_match_a_type_prefix() -> None:
    """What the dispatcher asks before reading the activation events at all."""
    done = "io.deepfaas.activation."
    index: FilterIndex[str] = FilterIndex()
    assert not index.might_match_prefix(done)
    index.add("upload", [{"exact": {"type": "io.deepfaas.storage.object.created"}}])
    index.add("mine", [{"prefix": {"type": "com.example."}}])
    index.add(
        "narrow", [{"any": [{"exact": {"type": "a"}}, {"prefix": {"type": "io.deepfaas.c"}}]}]
    )
    assert not index.might_match_prefix(done) and index.keys_matching_prefix(done) == set()
    cases: dict[str, list[dict[str, Any]]] = {
        "exact": [{"exact": {"type": "io.deepfaas.activation.failed"}}],
        "longer prefix": [{"prefix": {"type": "io.deepfaas.activation.comp"}}],
        "shorter prefix": [{"prefix": {"type": "io.deepfaas."}}],
        "no type": [{"exact": {"source": "/functions/train"}}],
        "bucket only": [{"exact": {"bucket": "b"}}],
        "not a type": [{"not": {"exact": {"type": "x"}}}],
    }
    for narrow in ([{"prefix": {"type": "com.example."}}], [{"exact": {"type": "a"}}]):
        assert not filters_might_match_prefix(narrow, done)
    for name, filters in cases.items():
        assert filters_might_match_prefix(filters, done), name
        index.add(name, filters)
        assert index.might_match_prefix(done), name
        assert index.keys_matching_prefix(done) == {name}
        index.remove(name)
        assert not index.might_match_prefix(done), name


def test_storage_shortcuts_become_filters_with_object_created_by_default() -> None:
    trigger = Trigger(name="t", function="f", bucket="images", key_prefix="in/", key_suffix=".jpg")
    predicate = compile_filters(trigger.effective_filters(PREFIX))
    ok = event(subject="in/cat.jpg", extensions={"bucket": "images"})
    assert predicate(ok)
    assert not predicate(ok.model_copy(update={"type": f"{PREFIX}.storage.object.deleted"}))
    assert not predicate(ok.model_copy(update={"subject": "out/cat.jpg"}))
    assert not predicate(ok.model_copy(update={"extensions": {"bucket": "other"}}))
    both = Trigger(name="t", function="f", bucket="images", event_types=[CREATED, "x.deleted"])
    assert compile_filters(both.effective_filters(PREFIX))(
        ok.model_copy(update={"type": "x.deleted"})
    )


def test_trigger_validation_names_the_bad_part() -> None:
    with pytest.raises(ValidationFailedError) as info:
        Trigger.parse({"name": "t", "function": "f", "filters": [{"all": [{"exact": {}}]}]})
    assert info.value.fields["path"] == "filters[0].all[0].exact"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": "T!", "function": "f", "bucket": "b1"}, "name"),
        ({"name": "t", "function": "f"}, "needs filters"),
        (
            {"name": "t", "function": "f", "bucket": "b1", "output": {"bucket": "B"}},
            "output.bucket",
        ),
        (
            {
                "name": "t",
                "function": "f",
                "bucket": "b1",
                "output": {"bucket": "out", "key_template": "{nope}"},
            },
            "{nope}",
        ),
        ({"name": "t", "function": "f", "bucket": "b1", "surprise": 1}, "surprise"),
    ]
    for data, fragment in cases:
        with pytest.raises(ValidationFailedError) as info:
            Trigger.parse(data)
        assert fragment in str(info.value), str(info.value)


def test_key_templates() -> None:
    assert check_key_template("{stem}.json") == "{stem}.json"
    for bad in ("", "{key!r}", "{key:>10}", "{0}", "{key.x}", "{", "{event}"):
        with pytest.raises(ValueError):
            check_key_template(bad)
    rendered = render_key(
        "{trigger}/{bucket}/{stem}.out{ext}?{id}",
        key="in/cat.jpg",
        bucket="b",
        event_id="e",
        trigger="t",
    )
    assert rendered == "t/b/in/cat.out.jpg?e"
    assert render_key("{stem}{ext}", key="README", bucket="", event_id="", trigger="") == "README"


def test_storage_object_from_the_s3_record() -> None:
    record = {
        "eventName": "s3:ObjectCreated:Put",
        "s3": {
            "bucket": {"name": "images"},
            "object": {
                "key": "in%2Fa+b.jpg",
                "size": 12,
                "eTag": '"abc"',
                "contentType": "image/jpeg",
            },
        },
    }
    with_ext = event(
        subject="in/a b.jpg", extensions={"bucket": "images"}, data=orjson.dumps(record)
    )
    expected = {
        "bucket": "images",
        "key": "in/a b.jpg",
        "size": 12,
        "etag": "abc",
        "content_type": "image/jpeg",
    }
    assert storage_object(with_ext) == expected
    wrapped = event(data=orjson.dumps({"Records": [record]}))
    assert storage_object(wrapped) == expected
    bare = event(subject="k", extensions={"bucket": "b"})
    assert storage_object(bare) == {
        "bucket": "b",
        "key": "k",
        "size": None,
        "etag": None,
        "content_type": None,
    }
    assert storage_object(event(type="x", data=b"not json")) is None
