"""Input and output of the `deploy` function."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from eventbus.namespaces import QUALIFIED_NAME_PATTERN
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
