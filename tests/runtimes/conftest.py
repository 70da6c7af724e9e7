"""Fixtures of the runtimes tests: a Kubernetes API emulator (kmock) on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import kmock
import pytest


@pytest.fixture
async def kube() -> AsyncIterator[kmock.KubernetesEmulator]:
    """kmock's in-memory Kubernetes API on 127.0.0.1 and a free port; nothing runs controllers."""
    async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator, host="127.0.0.1"):
        yield emulator
