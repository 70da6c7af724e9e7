"""The contract every `Provider` keeps; a test module runs it against each implementation.

Subclass `ProviderContract` and give a `provider` fixture (a fresh provider) and, when the
runtime's readiness needs an outside hand (kmock runs no controllers), override `make_ready`.
"""

from __future__ import annotations

import pytest

from runtimes.errors import ProviderError
from runtimes.providers.base import Provider, wait_ready
from runtimes.providers.gpus import Gpu
from runtimes.types import RuntimeHandle, RuntimeSpec, RuntimeStatus

SPEC = RuntimeSpec(name="contract", function="contract", module="functions.rank.handler:handle",
                   image="ghcr.io/deepfaas/worker:0.1", min_scale=0, max_scale=2)  # fmt: skip


class ProviderContract:
    """provision -> handle; idempotent provision; status; scale; release (twice); gone after."""

    async def make_ready(self, provider: Provider, handle: RuntimeHandle) -> None:
        """Bring the runtime to ready where the site needs help (no-op by default)."""

    async def test_is_a_provider(self, provider: Provider) -> None:
        assert isinstance(provider, Provider)
        assert provider.kind in ("local", "kubernetes", "openwhisk") and provider.site

    async def test_provision_returns_a_handle_of_this_site(self, provider: Provider) -> None:
        handle = await provider.provision(SPEC)
        assert handle.site == provider.site and handle.kind == provider.kind
        assert handle.name == SPEC.name and handle.ref
        assert await provider.provision(SPEC) == handle  # idempotent
        await provider.release(handle)

    async def test_status_scale_and_release(self, provider: Provider) -> None:
        handle = await provider.provision(SPEC)
        await self.make_ready(provider, handle)
        status = await provider.status(handle)
        assert isinstance(status, RuntimeStatus) and status.is_ready
        await provider.scale(handle, 0)
        assert isinstance(await provider.status(handle), RuntimeStatus)
        await provider.release(handle)
        await provider.release(handle)  # releasing twice is not an error
        with pytest.raises(ProviderError):
            await provider.status(handle)

    async def test_a_foreign_handle_is_refused(self, provider: Provider) -> None:
        foreign = RuntimeHandle("elsewhere", provider.kind, "nope", "nope")
        with pytest.raises(ProviderError):
            await provider.status(foreign)

    async def test_status_is_typed_and_the_one_readiness_wait_returns_it(
        self, provider: Provider
    ) -> None:
        handle = await provider.provision(SPEC)
        await self.make_ready(provider, handle)
        status = await wait_ready(provider, handle, timeout_s=10, poll_s=0.02)
        assert status.is_ready and status.pending == "" and status.workers >= 0
        assert all(isinstance(g, int) for g in status.gpus)
        assert all(isinstance(g, Gpu) for g in provider.gpus)
        await provider.release(handle)
        await provider.close()  # part of the contract; closing twice (the fixture) is fine
