"""The one back-off every retrying part uses."""

from __future__ import annotations

from eventbus.backoff import Backoff


def test_delays_double_from_the_base_up_to_the_cap() -> None:
    backoff = Backoff(0.5, 30.0)
    assert [backoff.delay(n) for n in range(0, 9)] == [0.5, 0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff.delay(10_000) == 30.0  # no overflow, however many tries


def test_a_zero_base_never_waits() -> None:
    assert Backoff(0.0, 60.0).delay(5) == 0.0
