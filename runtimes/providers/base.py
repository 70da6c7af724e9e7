"""The one seam every kind of site implements: the `Provider` protocol, and its readiness wait.

The controller drives functions' runtimes and deployments through `Provider` alone. A provider
whose workers are processes of this machine is also a `WorkerHost`: the controller relays the
workers' announcements to it and reads its instances for the instances API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from runtimes.errors import ProvisioningError
from runtimes.providers.gpus import Gpu
from runtimes.types import RuntimeHandle, RuntimeSpec, RuntimeStatus


@runtime_checkable
class Provider(Protocol):
    """Provisions, scales and releases runtimes on one site."""

    kind: str
    site: str

    @property
    def gpus(self) -> Sequence[Gpu]:
        """GPUs this provider hands out itself (a `local` site's); empty where the site
        schedules its own (Kubernetes, OpenWhisk: their capacity is what the sites file says)."""
        ...

    async def provision(self, spec: RuntimeSpec, *, pending_ok: bool = False) -> RuntimeHandle:
        """Create the runtime (idempotent for the same spec name); raise `ProvisioningError`.

        A runtime the site can never hold raises `CapacityError` (placement tries the next
        site), unless ``pending_ok``: then it is kept, its status `pending` with the reason.
        """
        ...

    async def status(self, handle: RuntimeHandle) -> RuntimeStatus:
        """Desired, running and ready replicas, and why not ready (`pending`, `message`)."""
        ...

    async def scale(self, handle: RuntimeHandle, replicas: int) -> None:
        """Set the number of replicas (0 releases the workers but keeps the runtime)."""
        ...

    async def release(self, handle: RuntimeHandle) -> None:
        """Remove the runtime and everything it holds; releasing twice is not an error."""
        ...

    async def close(self) -> None:
        """Let go of what the provider holds (connections; a local site's workers)."""
        ...


@runtime_checkable
class WorkerHost(Protocol):
    """A provider whose workers are processes the controller hears from (the `local` one)."""

    async def start(self) -> None:
        """Start supervising (and fill a prewarmed pool)."""
        ...

    def mark_ready(self, pid: int) -> None:
        """A worker (or a prewarmed stem) with this pid announced it is ready."""
        ...

    def instances(self, handle: RuntimeHandle) -> list[dict[str, Any]]:
        """The runtime's worker processes, for the instances API."""
        ...

    def prewarmed(self) -> dict[str, int] | None:
        """The prewarmed pool's size and ready stems; None without a pool."""
        ...


async def wait_ready(
    provider: Provider, handle: RuntimeHandle, timeout_s: float, *, poll_s: float = 0.2
) -> RuntimeStatus:
    """Poll `status` until the runtime is ready; a retryable `ProvisioningError` with the last
    reason after ``timeout_s``. The one readiness wait: placement and providers use it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        current = await provider.status(handle)
        if current.is_ready:
            return current
        if loop.time() >= deadline:
            raise ProvisioningError(
                f"runtime {handle.name!r} not ready after {timeout_s:g}s: "
                f"{current.message or current.pending or 'no reason'}",
                site=handle.site,
                runtime=handle.name,
                desired=current.desired,
                ready=current.ready,
                retryable=True,
            )
        await asyncio.sleep(min(poll_s, max(0.0, deadline - loop.time())))
