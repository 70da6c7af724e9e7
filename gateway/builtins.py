"""The platform's own functions (`inference`, `retrain`, `rank`, `deploy`), registered at start."""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

import functions
from eventbus.connection import Bus
from eventbus.errors import ConflictError
from eventbus.invocations import enqueue, new_invocation
from runtimes.activations import new_activation_id
from runtimes.placement.deployments import DeploymentStore, Desired
from runtimes.specs import FunctionRegistry
from runtimes.types import FunctionSpec

log = logging.getLogger(__name__)
FUNCTIONS_DIR = Path(functions.__file__).resolve().parent


def builtin_spec(name: str) -> FunctionSpec | None:
    """The spec in `functions/<name>/function.yaml`, or None if there is no such function."""
    path = FUNCTIONS_DIR / name / "function.yaml"
    if not path.is_file():
        return None
    return FunctionSpec.model_validate(yaml.safe_load(path.read_text()))


async def register_builtins(bus: Bus, names: list[str]) -> list[str]:
    """Register each named built-in that is not registered yet; a user's version is kept."""
    registry = FunctionRegistry(bus)
    added = []
    for name in names:
        spec = builtin_spec(name)
        if spec is None:
            log.warning("no built-in function %r (no %s/function.yaml)", name, name)
            continue
        try:
            await registry.put(spec, create_only=True)
        except ConflictError:
            continue
        added.append(name)
    if added:
        log.info("registered built-in functions: %s", ", ".join(added))
    return added


async def reconcile_deployments(bus: Bus) -> str | None:
    """Queue one `deploy` reconcile when a deployment should be running; its activation id."""
    records = await DeploymentStore(bus).list()
    if not any(r.desired is Desired.RUNNING for r in records):
        return None
    body = b'{"action": "reconcile"}'
    invocation = new_invocation(
        bus, "deploy", body, source="/up", activation_id=new_activation_id()
    )
    await enqueue(bus, invocation)
    log.info("queued a reconcile of %d deployment(s): activation %s", len(records), invocation.id)
    return invocation.id
