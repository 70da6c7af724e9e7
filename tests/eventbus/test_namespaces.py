"""The namespace mapping: bare names in default, `ns=name` elsewhere, never a collision."""

from __future__ import annotations

import re

import pytest

from eventbus.namespaces import (
    DEFAULT_NAMESPACE,
    QUALIFIED_NAME_PATTERN,
    belongs,
    is_name,
    local_name,
    namespace_of,
    qualify,
    split,
)


def test_default_keeps_bare_names() -> None:
    assert qualify(DEFAULT_NAMESPACE, "hello") == "hello"
    assert split("hello") == ("default", "hello")


@pytest.mark.parametrize("ns", ["team-a", "a", "x_1", "n" * 63])
@pytest.mark.parametrize("name", ["hello", "h-1_b", "z" * 63])
def test_round_trip(ns: str, name: str) -> None:
    internal = qualify(ns, name)
    assert split(internal) == (ns, name)
    assert namespace_of(internal) == ns and local_name(internal) == name
    assert belongs(internal, ns) and not belongs(internal, "other")
    assert re.match(QUALIFIED_NAME_PATTERN, internal)


@pytest.mark.parametrize("ns", ["team-a", "b"])
def test_internal_names_are_valid_kv_keys_subject_tokens_and_durables(ns: str) -> None:
    internal = qualify(ns, "fn")
    assert re.match(r"^[-/_=.a-zA-Z0-9]+$", internal)  # nats-py's KV key rule
    assert not set(internal) & set(". *>/\\\t\n")  # subject token, durable name


def test_no_user_name_collides_with_a_qualified_one() -> None:
    # a user name cannot hold the separator, so `a=b` is only ever (a, b)
    assert not is_name("a=b")
    assert qualify("a", "b") != qualify("default", "a-b")
    assert {qualify(ns, n) for ns in ("a", "a-b") for n in ("b-c", "c")} == {
        "a=b-c",
        "a=c",
        "a-b=b-c",
        "a-b=c",
    }


@pytest.mark.parametrize(
    "bad", ["", "A", "a.b", "a b", "a/b", "a*", "a>", "_", "-a", "a=b", "a\n", "team\n"]
)
def test_invalid_names_are_refused(bad: str) -> None:
    assert not is_name(bad)
    with pytest.raises(ValueError):
        qualify("team", bad)
    with pytest.raises(ValueError):
        qualify(bad, "fn")
