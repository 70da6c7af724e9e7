"""Asking the control plane about deployments: the `control.deployments.<op>` request-reply.

The controller that holds the leader lease owns placement, the providers and the deployment
records (`runtimes.control.deployments`); the `deploy` function asks it through this client,
so a runtime lives in the controller, not in whichever worker asked for it.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import nats.errors
import orjson
from pydantic import BaseModel, Field

from eventbus.connection import Bus
from eventbus.errors import BusUnavailableError, DeepfaasError, NotFoundError
from eventbus.subjects import control_subject
from runtimes.placement.deployments import DeploymentRecord
from runtimes.placement.sites import Site
from runtimes.types import RuntimeSpec

Op = Literal["create", "redeploy", "delete", "get", "list", "reconcile", "sites"]
OPS: Final[tuple[Op, ...]] = ("create", "redeploy", "delete", "get", "list", "reconcile", "sites")


def deployments_subject(op: str) -> str:
    """The subject of one operation, e.g. ``control.deployments.create``."""
    return control_subject("deployments", op)


class Ranking(BaseModel):
    """The sites to try, best first, as `rank` ordered them; or why ranking failed."""

    sites: list[str] = Field(default_factory=list)
    error: dict[str, Any] | None = Field(default=None, description="code, message, fields")


class DeploymentRequest(BaseModel):
    """The body of a `control.deployments.<op>` request (the fields an operation needs)."""

    name: str | None = None
    spec: RuntimeSpec | None = None
    placement: dict[str, Any] = Field(default_factory=dict)
    source: dict[str, Any] = Field(default_factory=dict)
    ranking: Ranking | None = None


class ControlPlaneError(DeepfaasError):
    """An error the control plane answered with; it keeps the code it was raised with."""

    def __init__(self, code: str, message: str, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.code = code


def error_body(exc: DeepfaasError) -> dict[str, Any]:
    """An error as it crosses the bus."""
    return {"code": exc.code, "message": exc.message, "fields": exc.fields}


def error_from(body: dict[str, Any]) -> DeepfaasError:
    """The error a reply (or a ranking) carries."""
    code, message = str(body.get("code", "internal")), str(body.get("message", ""))
    fields = body.get("fields") or {}
    if code == NotFoundError.code:
        return NotFoundError(message, **fields)
    return ControlPlaneError(code, message, **fields)


class DeploymentsClient:
    """Create, redeploy, delete, read and reconcile deployments through the leading controller."""

    def __init__(self, bus: Bus, *, timeout: float = 300.0) -> None:
        self.bus = bus
        self.timeout = timeout

    async def create(
        self, name: str, spec: RuntimeSpec, placement: dict[str, Any],
        source: dict[str, Any], ranking: Ranking,
    ) -> DeploymentRecord:  # fmt: skip
        """Create a deployment, or update it rolling; the record once it is ready."""
        request = DeploymentRequest(
            name=name, spec=spec, placement=placement, source=source, ranking=ranking
        )
        return _record(await self._ask("create", request))

    async def redeploy(self, name: str, ranking: Ranking) -> DeploymentRecord:
        """Place a deployment's recorded topology again."""
        return _record(await self._ask("redeploy", DeploymentRequest(name=name, ranking=ranking)))

    async def delete(self, name: str) -> DeploymentRecord:
        """Release the runtime; the record stays, released."""
        return _record(await self._ask("delete", DeploymentRequest(name=name)))

    async def get(self, name: str) -> DeploymentRecord:
        """One record, or `NotFoundError`."""
        return _record(await self._ask("get", DeploymentRequest(name=name)))

    async def reconcile(self) -> list[DeploymentRecord]:
        """Re-place every running deployment whose runtime is gone; those placed again."""
        reply = await self._ask("reconcile", DeploymentRequest())
        return [DeploymentRecord.model_validate(r) for r in reply.get("records", [])]

    async def sites(self) -> list[Site]:
        """Every site as placement sees it (this machine's GPUs included)."""
        reply = await self._ask("sites", DeploymentRequest())
        return [Site.model_validate(s) for s in reply.get("sites", [])]

    async def list(self) -> list[DeploymentRecord]:
        """Every record."""
        reply = await self._ask("list", DeploymentRequest())
        return [DeploymentRecord.model_validate(r) for r in reply.get("records", [])]

    async def _ask(self, op: Op, request: DeploymentRequest) -> dict[str, Any]:
        body = request.model_dump_json(exclude_none=True).encode()
        try:
            msg = await self.bus.nc.request(deployments_subject(op), body, timeout=self.timeout)
        except nats.errors.NoRespondersError:
            raise BusUnavailableError(
                "no controller answers deployments (none leads now)"
            ) from None
        except nats.errors.TimeoutError:
            raise BusUnavailableError(
                f"the controller did not answer {op} within {self.timeout:g} s"
            ) from None
        reply = orjson.loads(msg.data)
        if not isinstance(reply, dict):
            raise ControlPlaneError("internal", "the controller answered something unexpected")
        if "error" in reply:
            raise error_from(reply["error"])
        return reply


def _record(reply: dict[str, Any]) -> DeploymentRecord:
    return DeploymentRecord.model_validate(reply["record"])
