"""The one `Provider` contract, run against local, kubernetes (on kmock) and openwhisk."""

from __future__ import annotations

from collections.abc import AsyncIterator

import kmock
import pytest

from runtimes.errors import CapacityError
from runtimes.providers.kubernetes import KubernetesProvider
from runtimes.providers.local import LocalProvider
from runtimes.providers.openwhisk import OpenWhiskProvider
from runtimes.types import GpuRequest
from tests.runtimes.openwhisk_standin import AUTH, serve
from tests.runtimes.provider_contract import SPEC, ProviderContract


class TestLocal(ProviderContract):
    @pytest.fixture
    async def provider(self) -> AsyncIterator[LocalProvider]:
        p = LocalProvider("local-a", gpus=[])
        yield p
        await p.close()

    async def test_a_gpu_runtime_is_refused_or_kept_pending_with_the_reason(
        self, provider: LocalProvider
    ) -> None:
        gpu = SPEC.model_copy(update={"name": "g", "gpu": GpuRequest(count=1), "min_scale": 1})
        with pytest.raises(CapacityError, match="no GPU free"):
            await provider.provision(gpu)
        handle = await provider.provision(gpu, pending_ok=True)
        status = await provider.status(handle)
        assert status.pending.startswith("no GPU free: 1 x any model asked")
        assert status.message == status.pending and status.ready == 0 and not status.is_ready


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
