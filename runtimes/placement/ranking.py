"""The `rank` function's contract (requirements, preferences, sites; the ranking).

Kept in `runtimes/` because two functions share it: `rank` serves it and `deploy` calls `rank`
through the platform with it (functions never import each other).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runtimes.placement.sites import Site, SiteFigures, SiteKind
from runtimes.types import GpuRequest

MAX_SITES: Final = 100_000
_INPUT: Final = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Constraint(StrEnum):
    """Hard constraints, in the order they are checked; an excluded site names the first failed."""

    REACHABLE = "reachable"
    REGION = "region"
    DATACENTRE = "datacentre"
    LABELS = "labels"
    AVAILABILITY = "availability"
    CPU = "cpu"
    MEMORY = "memory"
    GPU = "gpu"
    MAX_COST = "max_cost"


class Criterion(StrEnum):
    """Soft criteria a site is scored on; each is normalised to 0..1 (1 = best) then weighted."""

    AVAILABILITY = "availability"
    COST = "cost"
    HEADROOM = "headroom"
    QUEUE_WAIT = "queue_wait"
    FAILURES = "failures"
    UTILISATION = "utilisation"
    LOCALITY = "locality"


class Requirements(BaseModel):
    """What the placement needs; a site that misses any of it is excluded, not ranked."""

    model_config = _INPUT

    cpu: float = Field(default=1.0, gt=0)
    memory_mb: int = Field(default=256, ge=0)
    gpu: GpuRequest = Field(default_factory=GpuRequest)
    regions: tuple[str, ...] = Field(default=(), description="allowed regions; empty = any")
    datacentres: tuple[str, ...] = Field(default=(), description="allowed datacentres; empty = any")
    labels: dict[str, str] = Field(default_factory=dict, description="labels a site must carry")
    min_availability: float | None = Field(default=None, ge=0, le=1)
    max_cost_per_hour: float | None = Field(default=None, ge=0)


class Weights(BaseModel):
    """Relative weights of the criteria; only their ratios matter (scores divide by the sum)."""

    model_config = _INPUT

    availability: float = Field(default=0.25, ge=0)
    cost: float = Field(default=0.20, ge=0)
    headroom: float = Field(default=0.15, ge=0)
    queue_wait: float = Field(default=0.15, ge=0)
    failures: float = Field(default=0.15, ge=0)
    utilisation: float = Field(default=0.05, ge=0)
    locality: float = Field(default=0.05, ge=0)

    @model_validator(mode="after")
    def _some_weight(self) -> Weights:
        if self.total() <= 0:
            raise ValueError("at least one weight must be positive")
        return self

    def total(self) -> float:
        """Sum of the weights."""
        return sum(self.of(c) for c in Criterion)

    def of(self, criterion: Criterion) -> float:
        """The weight of one criterion."""
        value: float = getattr(self, criterion.value)
        return value


class Preferences(BaseModel):
    """The user's preferences: criterion weights and where they would rather run."""

    model_config = _INPUT

    weights: Weights = Field(default_factory=Weights)
    preferred_regions: tuple[str, ...] = ()
    preferred_datacentres: tuple[str, ...] = ()


class CandidateSite(BaseModel):
    """A site to rank, with its live figures when the platform has them."""

    model_config = _INPUT

    site: Site
    figures: SiteFigures | None = None


class RankInput(BaseModel):
    """What to place, how the user weighs the criteria, and the sites to choose from."""

    model_config = _INPUT

    requirements: Requirements = Field(default_factory=Requirements)
    preferences: Preferences = Field(default_factory=Preferences)
    sites: tuple[CandidateSite, ...] = Field(default=(), max_length=MAX_SITES)

    @field_validator("sites")
    @classmethod
    def _unique_names(cls, sites: tuple[CandidateSite, ...]) -> tuple[CandidateSite, ...]:
        seen: set[str] = set()
        for candidate in sites:
            if candidate.site.name in seen:
                raise ValueError(f"duplicate site name {candidate.site.name!r}")
            seen.add(candidate.site.name)
        return sites


class RankedSite(BaseModel):
    """An eligible site: its score (0..1, higher is better) and what each criterion added."""

    site: str
    kind: SiteKind
    score: float
    breakdown: dict[Criterion, float] = Field(description="criterion: weighted normalised value")
    estimated_cost_per_hour: float
    gpu_model: str | None = Field(default=None, description="the site's GPU model that fits")


class ExcludedSite(BaseModel):
    """A site that cannot take the placement: the first constraint it failed, and why."""

    site: str
    constraint: Constraint
    detail: str
    lasting: bool = Field(
        default=False,
        description="the site's configuration rules it out, not its live figures: it will not "
        "take this placement until the sites file changes",
    )


class RankOutput(BaseModel):
    """Sites best first (ties broken by name), every excluded site, and a one-line summary."""

    ranked: list[RankedSite] = Field(default_factory=list)
    excluded: list[ExcludedSite] = Field(default_factory=list)
    best: str | None = Field(default=None, description="name of the top site; None if none fits")
    message: str = ""
