"""Placement: try the ranked sites in order until one provisions a ready runtime; say so in events.

Each try emits `runtime.provisioning`; success `runtime.ready`; a failure `runtime.failed`
with the reason (then the next site is tried). `release` emits `runtime.released`. Event ids
derive from (deployment, generation, site, phase), so a retried placement re-publishes
duplicates that JetStream drops.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from eventbus.connection import Bus
from eventbus.errors import DeepfaasError
from eventbus.publish import publish_event
from eventbus.types import CloudEvent
from runtimes.errors import ProviderError, ProvisioningError
from runtimes.providers.base import Provider, wait_ready
from runtimes.types import RuntimeHandle, RuntimeSpec

log = logging.getLogger(__name__)

SOURCE: Final = "/functions/deploy"
PROVISIONING, READY, FAILED, RELEASED = "provisioning", "ready", "failed", "released"


class PlacementError(ProviderError):
    """No ranked site could provision the runtime; ``fields['attempts']`` says why each failed."""

    code = "placement_failed"


@dataclass(frozen=True)
class Attempt:
    """One site tried for a placement, and how it went."""

    site: str
    ok: bool
    reason: str = ""
    code: str = ""
    at: str = ""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {"site": self.site, "ok": self.ok, "reason": self.reason, "code": self.code,
                "at": self.at}  # fmt: skip


@dataclass(frozen=True)
class Placed:
    """Where a runtime landed and the sites tried on the way."""

    handle: RuntimeHandle
    attempts: tuple[Attempt, ...]


class Placer:
    """Provisions a runtime on the first ranked site that can take it."""

    def __init__(
        self,
        bus: Bus | None,
        providers: Callable[[str], Provider],
        *,
        ready_timeout_s: float = 60.0,
        poll_s: float = 0.2,
    ) -> None:
        self.bus = bus
        self.providers = providers
        self.ready_timeout_s = ready_timeout_s
        self.poll_s = poll_s

    async def place(
        self, deployment: str, spec: RuntimeSpec, sites: Sequence[str], *, generation: int = 1
    ) -> Placed:
        """Try each site in order; the first ready runtime wins, or `PlacementError`."""
        attempts: list[Attempt] = []
        for site in sites:
            base = {"deployment": deployment, "runtime": spec.name, "site": site,
                    "generation": generation}  # fmt: skip
            await self.emit(PROVISIONING, deployment, {**base, "spec": spec.model_dump()},
                            key=(generation, site))  # fmt: skip
            try:
                provider = self.providers(site)
                handle = await provider.provision(spec)
                await self._wait_ready(provider, handle)
            except (DeepfaasError, ValueError) as exc:
                code = getattr(exc, "code", "invalid")
                attempts.append(Attempt(site, False, str(exc), code, _now()))
                log.warning("deployment %s: site %s failed: %s", deployment, site, exc)
                await self.emit(FAILED, deployment, {**base, "reason": str(exc), "code": code},
                                key=(generation, site))  # fmt: skip
                continue
            attempts.append(Attempt(site, True, "", "", _now()))
            ref = {"kind": handle.kind, "ref": handle.ref}
            await self.emit(READY, deployment, {**base, "handle": ref}, key=(generation, site))
            log.info("deployment %s: ready on %s (%s)", deployment, site, handle.ref)
            return Placed(handle, tuple(attempts))
        reasons = "; ".join(f"{a.site}: {a.reason}" for a in attempts) or "no site was eligible"
        raise PlacementError(
            f"deployment {deployment!r}: no site could provision it ({reasons})",
            deployment=deployment, attempts=[a.as_dict() for a in attempts],
        )  # fmt: skip

    async def release(self, deployment: str, handle: RuntimeHandle, *, generation: int) -> None:
        """Release a runtime on its site and emit `runtime.released`."""
        await self.providers(handle.site).release(handle)
        data = {
            "deployment": deployment,
            "runtime": handle.name,
            "site": handle.site,
            "generation": generation,
            "handle": {"kind": handle.kind, "ref": handle.ref},
        }
        await self.emit(RELEASED, deployment, data, key=(generation, handle.site))

    async def emit(
        self, phase: str, deployment: str, data: dict[str, Any], *, key: tuple[Any, ...] = ()
    ) -> None:
        """Publish one `runtime.<phase>` CloudEvent about a deployment."""
        if self.bus is None:
            return
        seed = orjson.dumps([deployment, phase, *key], default=str)
        event = CloudEvent(
            id=hashlib.sha256(seed).hexdigest()[:32],
            source=SOURCE,
            type=self.bus.event_type(f"runtime.{phase}"),
            subject=deployment,
            time=datetime.now(UTC),
            datacontenttype="application/json",
            data=orjson.dumps(data, default=str),
        )
        await publish_event(self.bus, event)

    async def _wait_ready(self, provider: Provider, handle: RuntimeHandle) -> None:
        """Wait until ready; a runtime that never gets ready is released before the error."""
        try:
            await wait_ready(provider, handle, self.ready_timeout_s, poll_s=self.poll_s)
        except ProvisioningError:
            try:
                await provider.release(handle)
            except DeepfaasError as exc:
                log.warning("releasing %s after a failed start: %s", handle.ref, exc)
            raise


def _now() -> str:
    return datetime.now(UTC).isoformat()
