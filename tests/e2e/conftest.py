"""The platform as a user runs it: `deepfaas up` against a real nats-server, over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from eventbus.server import EmbeddedNats
from tests.support import Platform, start_platform


@pytest.fixture(scope="module")
def platform(
    nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    started = start_platform(nats_server, Path(tmp_path_factory.mktemp("platform")))
    yield started
    started.stop()


@pytest.fixture
def client(platform: Platform) -> Iterator[httpx.Client]:
    with platform.client() as c:
        yield c
