"""Input and output of the `rank` function (defined in `runtimes.placement.ranking`, shared
with `deploy`)."""

from runtimes.placement.ranking import (
    MAX_SITES,
    CandidateSite,
    Constraint,
    Criterion,
    ExcludedSite,
    Preferences,
    RankedSite,
    RankInput,
    RankOutput,
    Requirements,
    Weights,
)

__all__ = [
    "MAX_SITES",
    "CandidateSite",
    "Constraint",
    "Criterion",
    "ExcludedSite",
    "Preferences",
    "RankInput",
    "RankOutput",
    "RankedSite",
    "Requirements",
    "Weights",
]
