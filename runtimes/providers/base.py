"""The one seam every kind of site implements: the `Provider` protocol."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from runtimes.types import RuntimeHandle, RuntimeSpec, RuntimeStatus


@runtime_checkable
class Provider(Protocol):
    """Provisions, scales and releases runtimes on one site."""

    kind: str
    site: str

    async def provision(self, spec: RuntimeSpec) -> RuntimeHandle:
        """Create the runtime (idempotent for the same spec name); raise `ProvisioningError`."""
        ...

    async def status(self, handle: RuntimeHandle) -> RuntimeStatus:
        """Desired and ready replicas of a runtime."""
        ...

    async def scale(self, handle: RuntimeHandle, replicas: int) -> None:
        """Set the number of replicas (0 releases the workers but keeps the runtime)."""
        ...

    async def release(self, handle: RuntimeHandle) -> None:
        """Remove the runtime and everything it holds; releasing twice is not an error."""
        ...
