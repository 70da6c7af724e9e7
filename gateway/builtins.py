"""The platform's own functions (`inference`, `retrain`, `rank`, `deploy`), registered at start.

Their specs are read from `functions/<name>/function.yaml` by path: the gateway never imports
function code (the worker's loader does, by name).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import yaml

from eventbus.connection import Bus
from eventbus.errors import ConflictError
from runtimes.specs import FunctionRegistry, keeps_platform_code
from runtimes.types import FunctionSpec

log = logging.getLogger(__name__)


def _functions_dir() -> Path:
    """Where the `functions` package lies, found without importing it."""
    found = importlib.util.find_spec("functions")
    if found is not None and found.submodule_search_locations:
        return Path(next(iter(found.submodule_search_locations))).resolve()
    return Path(__file__).resolve().parents[1] / "functions"


FUNCTIONS_DIR = _functions_dir()


def builtin_spec(name: str) -> FunctionSpec | None:
    """The spec in `functions/<name>/function.yaml`, or None if there is no such function."""
    path = FUNCTIONS_DIR / name / "function.yaml"
    if not path.is_file():
        return None
    return FunctionSpec.model_validate(yaml.safe_load(path.read_text()))


async def register_builtins(bus: Bus, names: list[str]) -> list[str]:
    """Register each named built-in that is not registered yet. Settings changed since are
    kept; a platform function found holding other code (`runtimes.specs.keeps_platform_code`) is
    registered again."""
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
            if keeps_platform_code(await registry.get(spec.name)):
                continue  # the operator's settings of the platform's code: kept
            # other code under a platform function's name (stored before that was refused)
            log.warning("function %s held other code: the platform's is registered again", name)
            await registry.put(spec)
        added.append(name)
    if added:
        log.info("registered built-in functions: %s", ", ".join(added))
    return added
