"""Which functions run in the worker itself: the platform's own, in `default`, and no other."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from eventbus.namespaces import DEFAULT_NAMESPACE, split

if TYPE_CHECKING:  # the runner imports this package: it starts without pydantic
    from runtimes.types import FunctionSpec

#: the built-in functions that need the bus (catalog, deployments, calls to `rank`)
TRUSTED_FUNCTIONS: tuple[str, ...] = ("inference", "retrain", "rank", "deploy")
TRUSTED_PACKAGE = "functions."


def is_trusted(spec: FunctionSpec, trusted: Collection[str] = TRUSTED_FUNCTIONS) -> bool:
    """Whether ``spec`` is platform code that runs unsandboxed, with the worker's bus.

    Only a function of namespace `default`, named in ``trusted``, whose handler is a module of
    the platform's own ``functions`` package (no inline code): a tenant naming such a module
    in its own function still gets a sandbox, and so does `default` for any other code.
    """
    namespace, name = split(spec.name)
    return (
        namespace == DEFAULT_NAMESPACE
        and name in trusted
        and spec.code is None
        and spec.handler.startswith(TRUSTED_PACKAGE)
    )
