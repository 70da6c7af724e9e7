"""The one `Provider` contract, run against local, kubernetes (on kmock) and openwhisk."""

from __future__ import annotations

from collections.abc import AsyncIterator

import kmock
import pytest

from runtimes.providers.kubernetes import KubernetesProvider
from runtimes.providers.local import LocalProvider
from runtimes.providers.openwhisk import OpenWhiskProvider
from tests.runtimes.openwhisk_standin import AUTH, serve
from tests.runtimes.provider_contract import ProviderContract


class TestLocal(ProviderContract):
    @pytest.fixture
    async def provider(self) -> AsyncIterator[LocalProvider]:
        p = LocalProvider("local-a", gpus=[])
        yield p
        await p.close()


class TestKubernetes(ProviderContract):
    @pytest.fixture
    async def provider(self, kube: kmock.KubernetesEmulator) -> AsyncIterator[KubernetesProvider]:
        p = KubernetesProvider("k8s", str(kube.url), token="t", namespace="ml", poll_s=0.02)
        yield p
        await p.close()


class TestOpenWhisk(ProviderContract):
    @pytest.fixture
    async def provider(self) -> AsyncIterator[OpenWhiskProvider]:
        async with serve() as standin:
            p = OpenWhiskProvider("ow", standin.url, auth=AUTH)
            yield p
            await p.close()
