"""What tests (and `bench`) share: the running platform and the one way to wait for a fact.

Import from here: ``from tests.support import Platform, start_platform, wait_activation,
wait_for, eventually`` (this replaces the old ``bench.harness``, which is gone).
`wait_for` polls in plain code, `eventually` inside a coroutine; never a fixed sleep.
"""

from tests.support.eventually import eventually, wait_for
from tests.support.platform import (
    Platform,
    embedded_nats,
    instances,
    start_platform,
    wait_activation,
)

__all__ = [
    "Platform",
    "embedded_nats",
    "eventually",
    "instances",
    "start_platform",
    "wait_activation",
    "wait_for",
]
