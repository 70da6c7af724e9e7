"""What a deployment is asked with: the `deploy` function's input and output, and the spec step.

Kept in `runtimes/` because three parts share it: the `deploy` function serves it, the gateway's
`/v1/deployments` checks a body against it before queueing, and the control plane places what
it describes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from eventbus.namespaces import QUALIFIED_NAME_PATTERN
from runtimes.errors import TemplateError
from runtimes.placement.deployments import DeploymentRecord
from runtimes.placement.ranking import Preferences
from runtimes.types import RuntimeSpec

Action = Literal["create", "update", "redeploy", "delete", "reconcile", "get", "list"]


class Constraints(BaseModel):
    """Hard placement constraints beside the runtime's own resources."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    regions: tuple[str, ...] = ()
    datacentres: tuple[str, ...] = ()
    labels: dict[str, str] = Field(default_factory=dict)
    sites: tuple[str, ...] = Field(default=(), description="only these sites; empty = any")
    min_availability: float | None = Field(default=None, ge=0, le=1)
    max_cost_per_hour: float | None = Field(default=None, ge=0)


class DeployInput(BaseModel):
    """What to deploy (a template or a spec) and where, or what to do with a deployment."""

    model_config = ConfigDict(extra="forbid")

    action: Action = "create"
    name: str | None = Field(default=None, pattern=QUALIFIED_NAME_PATTERN)
    template: str | None = Field(default=None, description="TOSCA template YAML text")
    template_path: str | None = Field(
        default=None, description="a template file under infra/tosca/templates"
    )
    inputs: dict[str, Any] = Field(default_factory=dict, description="the template's inputs")
    spec: RuntimeSpec | None = None
    constraints: Constraints = Field(default_factory=Constraints)
    preferences: Preferences = Field(default_factory=Preferences)

    @model_validator(mode="after")
    def _check(self) -> DeployInput:
        given = [x for x in (self.template, self.template_path, self.spec) if x is not None]
        if self.action in ("create", "update"):
            if len(given) != 1:
                raise ValueError("give exactly one of template, template_path or spec")
        elif given:
            raise ValueError(f"action {self.action!r} takes no template or spec")
        if self.action in ("redeploy", "delete", "get") and self.name is None:
            raise ValueError(f"action {self.action!r} needs the deployment's name")
        return self


class DeployOutput(BaseModel):
    """The deployment(s) the action produced or read."""

    action: Action
    deployment: DeploymentRecord | None = None
    deployments: list[DeploymentRecord] = Field(default_factory=list)
    message: str = ""


def _template_file(path: Path) -> bool:
    """Whether ``path`` is a file inside the templates folder (a NUL byte or a name too long
    for the file system is not)."""
    from runtimes.placement.tosca import TEMPLATES_DIR

    try:
        resolved = path.resolve()
        return resolved.is_relative_to(TEMPLATES_DIR.resolve()) and resolved.is_file()
    except (ValueError, OSError):
        return False


def to_spec(inp: DeployInput) -> tuple[RuntimeSpec, dict[str, Any]]:
    """The runtime spec the input asks for, and where it came from (`TemplateError` if bad)."""
    if inp.spec is not None:
        return inp.spec, {"kind": "spec"}
    # tosca-parser is heavy: loaded only when a template is given
    from runtimes.placement.tosca import TEMPLATES_DIR, load_topology

    if inp.template_path is not None:
        path = TEMPLATES_DIR / inp.template_path
        if not _template_file(path):
            raise TemplateError(
                f"template_path {inp.template_path!r} is not a file under {TEMPLATES_DIR}",
                template=inp.template_path,
            )  # fmt: skip
        topology = load_topology(path, inp.inputs)
    else:
        topology = load_topology(inp.template or "", inp.inputs)
    if len(topology.runtimes) != 1:
        raise TemplateError(
            f"template {topology.name!r} has {len(topology.runtimes)} runtimes; "
            "a deployment places exactly one", template=topology.name,
        )  # fmt: skip
    source = {"kind": "tosca", "template": topology.name, "inputs": dict(topology.inputs)}
    return topology.runtimes[0], source
