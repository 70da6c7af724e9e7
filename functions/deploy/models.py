"""Input and output of the `deploy` function (the contract lives in `runtimes.placement`)."""

from __future__ import annotations

from runtimes.placement.requests import Action, Constraints, DeployInput, DeployOutput

__all__ = ["Action", "Constraints", "DeployInput", "DeployOutput"]
