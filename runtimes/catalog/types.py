"""Contracts of the model catalog: modules, their versions, and the states a version goes through.

A *module* is what a community shares (a model plug-in with its description, schemas, resource
needs and runtime template); a *version* is one trained artifact of it, with its metrics and
lineage. At most one version of a module is ``promoted``: the one inference serves by default.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

from eventbus.namespaces import DEFAULT_NAMESPACE, NAMESPACE_PATTERN
from eventbus.streams import CATALOG_KV as CATALOG_KV
from runtimes.catalog.plugins import MODEL_NAME_PATTERN
from runtimes.types import GpuRequest

ARTIFACT_BUCKET: Final = "deepfaas-models"


class VersionState(StrEnum):
    """Where a version stands: served (`promoted`), kept (`candidate`) or withdrawn (`retired`)."""

    CANDIDATE = "candidate"
    PROMOTED = "promoted"
    RETIRED = "retired"


class Resources(BaseModel):
    """What a runtime of the module needs."""

    model_config = ConfigDict(extra="forbid")

    cpu: float = Field(default=1.0, gt=0, le=128)
    memory_mb: int = Field(default=512, ge=64, le=262_144)
    gpu: GpuRequest = Field(default_factory=GpuRequest)


class ModuleSpec(BaseModel):
    """What a publisher sends: the module's description, schemas, needs and gate."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=MODEL_NAME_PATTERN, description="unique, lower-case")
    plugin: str | None = Field(
        default=None,
        pattern=MODEL_NAME_PATTERN,
        description="the `deepfaas.models` entry point that serves it (default: the name)",
    )
    title: str = Field(default="", max_length=200)
    description: str = Field(default="", max_length=10_000)
    keywords: list[str] = Field(default_factory=list, max_length=50)
    license: str = Field(default="", max_length=200)
    author: str = Field(default="", max_length=200)
    url: str | None = Field(default=None, max_length=2000)
    framework: str = Field(default="", max_length=100)
    input_schema: dict[str, Any] | None = Field(default=None, description="JSON Schema of predict")
    output_schema: dict[str, Any] | None = None
    train_schema: dict[str, Any] | None = Field(default=None, description="JSON Schema of train")
    resources: Resources = Field(default_factory=Resources)
    template: str | None = Field(
        default=None, max_length=500, description="TOSCA runtime template (infra/tosca/templates)"
    )
    metric: str = Field(
        default="accuracy", min_length=1, description="gating metric (higher is better)"
    )
    tolerance: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="a candidate is promoted if its metric >= the promoted one's minus this",
    )

    @property
    def plugin_name(self) -> str:
        """The entry point that serves this module."""
        return self.plugin or self.name


class Module(ModuleSpec):
    """A module as the catalog keeps it: the spec plus what the platform manages."""

    owner: str = Field(
        default=DEFAULT_NAMESPACE,
        pattern=NAMESPACE_PATTERN,
        description="the namespace that published it: the only one that may change it "
        "(modules stored before owners existed belong to `default`)",
    )
    promoted: int | None = Field(default=None, description="the version inference serves")
    latest: int = Field(default=0, ge=0, description="highest version number given out")
    promotions: list[int] = Field(
        default_factory=list, description="versions promoted, oldest first (rollback walks it)"
    )
    created: datetime | None = None
    updated: datetime | None = None


class Artifact(BaseModel):
    """Where a version's trained bytes live in the object store."""

    bucket: str
    key: str
    size: int = Field(ge=0)
    sha256: str


class Lineage(BaseModel):
    """Where a version came from: its data, its parent, and the run that made it."""

    data: dict[str, Any] = Field(default_factory=dict)
    parent: int | None = Field(default=None, description="the version promoted when it was made")
    plugin_version: str = ""
    activation: str | None = Field(default=None, description="the training activation")
    train_args: dict[str, Any] = Field(default_factory=dict)


class ModelVersion(BaseModel):
    """One trained version of a module."""

    module: str
    version: int = Field(ge=1)
    state: VersionState = VersionState.CANDIDATE
    artifact: Artifact
    metrics: dict[str, float] = Field(default_factory=dict)
    metric: str = "accuracy"
    lineage: Lineage = Field(default_factory=Lineage)
    reason: str | None = Field(default=None, description="why it is where it is (gate, rollback)")
    created: datetime | None = None
    updated: datetime | None = None

    @property
    def score(self) -> float | None:
        """The gating metric's value, if it was measured."""
        return self.metrics.get(self.metric)


class GateDecision(BaseModel):
    """The promotion gate's verdict on a candidate."""

    promote: bool
    reason: str
    candidate: float | None = None
    promoted: float | None = None
    tolerance: float = 0.0
