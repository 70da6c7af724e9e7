"""The `rank` function: rank the sites of the hybrid cloud for one placement.

After the INDIGO Cloud Provider Ranker, which sums an SLA score and normalised monitoring
metrics per provider, but in two explicit steps:

1. **Hard constraints**, checked per site in the fixed order of `Constraint` (reachable,
   region, datacentre, labels, availability, cpu, memory, gpu, max_cost). A site that fails
   one is excluded with the first constraint it failed and a detail; it is never scored.
   Resources are what is free: live figures when known, else the site's capacity. A GPU
   request needs `count` free GPUs of one model entry matching the model and vendor asked.
   An exclusion is `lasting` when the site's configuration decides it (its region, labels,
   SLA, cost, or a capacity too small even when idle), not its live figures.
2. **Soft criteria**, scored on the eligible sites only. Raw values: availability as "nines"
   (-log10(1 - a), capped at 6) of the SLA target; cost = site cost + GPUs x GPU cost per
   hour; headroom = mean over cpu, memory (and gpu when asked) of the share of capacity
   still free after the placement; queue wait, recent failures and utilisation from live
   figures; locality = 1 in a preferred datacentre, 0.5 in a preferred region, else 0.
   Each criterion is min-max normalised across the eligible sites to 0..1 (1 = best; lower
   is better for cost, queue wait, failures, utilisation). A criterion on which all known
   values tie gives 1 to each; an unknown live figure gives the neutral 0.5.
   score = sum(weight x normalised) / sum(weights), in 0..1; ties are broken by site name.
   Default weights (`Weights`): availability 0.25, cost 0.20, headroom 0.15, queue wait 0.15,
   failures 0.15, utilisation 0.05, locality 0.05; the user's weights replace them one by one.

Each step is linear in the sites, the final sort O(n log n); the result depends only on the
input (never on the sites' order or the clock).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Final

from functions.rank.models import (
    CandidateSite,
    Constraint,
    Criterion,
    Preferences,
    RankInput,
    RankOutput,
    Requirements,
)
from runtimes.placement.sites import GpuCapacity, Site, gpu_model_matches
from runtimes.types import Context

log = logging.getLogger(__name__)

MAX_NINES: Final = 6.0
UNKNOWN: Final = 0.5
DIGITS: Final = 9
INLINE_MAX_SITES: Final = 2000
# Criteria where a lower raw value is better.
_LOWER_IS_BETTER: Final = frozenset(
    {Criterion.COST, Criterion.QUEUE_WAIT, Criterion.FAILURES, Criterion.UTILISATION}
)
_CRITERIA: Final = tuple(Criterion)
_Row = dict[str, Any]  # one `RankedSite` or `ExcludedSite`, validated with the whole output
_Offers = list[tuple[GpuCapacity, int]]  # a site's GPU entries with how many of each are free


async def handle(inp: RankInput, ctx: Context) -> RankOutput:
    """Rank the input's sites for its requirements and preferences."""
    # About 10 µs a site: beyond a few thousand, keep the worker's event loop free.
    if len(inp.sites) > INLINE_MAX_SITES:
        out = await asyncio.to_thread(rank, inp)
    else:
        out = rank(inp)
    log.info("activation %s: %s", ctx.activation_id, out.message)
    return out


@dataclass(frozen=True, slots=True)
class _Ask:
    """The requirements and preferences, with their name lists case-folded once per call."""

    req: Requirements
    regions: frozenset[str]
    datacentres: frozenset[str]
    near_regions: frozenset[str]
    near_datacentres: frozenset[str]

    @classmethod
    def of(cls, inp: RankInput) -> _Ask:
        req, prefs = inp.requirements, inp.preferences
        return cls(
            req,
            _folded(req.regions),
            _folded(req.datacentres),
            _folded(prefs.preferred_regions),
            _folded(prefs.preferred_datacentres),
        )


@dataclass(frozen=True, slots=True)
class _Fit:
    name: str
    candidate: CandidateSite
    raw: tuple[float | None, ...]  # one per criterion, in `_CRITERIA` order
    cost: float
    gpu_model: str | None


def rank(inp: RankInput) -> RankOutput:
    """Rank the eligible sites best first and list every excluded site with its reason."""
    ask = _Ask.of(inp)
    fits: list[_Fit] = []
    excluded: list[_Row] = []
    for candidate in inp.sites:
        result = _check(candidate, ask)
        if isinstance(result, _Fit):
            fits.append(result)
        else:
            excluded.append(result)
    ranked = _score(fits, inp.preferences)
    ranked.sort(key=lambda r: (-r["score"], r["site"]))
    excluded.sort(key=lambda e: e["site"])
    # Plain rows validated once, in one call: much cheaper than a model per site.
    return RankOutput.model_validate(
        {
            "ranked": ranked,
            "excluded": excluded,
            "best": ranked[0]["site"] if ranked else None,
            "message": _summary(len(inp.sites), ranked, excluded),
        }
    )


def _check(c: CandidateSite, ask: _Ask) -> _Fit | _Row:
    site, fig, req = c.site, c.figures, ask.req

    def out(constraint: Constraint, detail: str) -> _Row:
        return {"site": site.name, "constraint": constraint, "detail": detail,
                "lasting": _never(site, ask)}  # fmt: skip

    if fig is not None and not fig.reachable:
        return out(Constraint.REACHABLE, "live figures say the site is unreachable")
    failed = _configured(site, ask)
    if failed is not None:
        return out(*failed)
    cap = site.capacity
    free_cpus = min(cap.cpus, fig.free_cpus) if fig and fig.free_cpus is not None else cap.cpus
    if req.cpu > free_cpus:
        return out(Constraint.CPU, f"needs {req.cpu:g} CPUs; {free_cpus:g} free of {cap.cpus:g}")
    free_mem = cap.memory_mb
    if fig is not None and fig.free_memory_mb is not None:
        free_mem = min(cap.memory_mb, fig.free_memory_mb)
    if req.memory_mb > free_mem:
        return out(
            Constraint.MEMORY, f"needs {req.memory_mb} MB; {free_mem} MB free of {cap.memory_mb}"
        )
    headroom = [(free_cpus - req.cpu) / cap.cpus, (free_mem - req.memory_mb) / cap.memory_mb]
    gpu: GpuCapacity | None = None
    if req.gpu.count > 0:
        offers = [(g, _free_gpus(c, g)) for g in cap.gpus]
        matching = [(g, n) for g, n in offers if _gpu_matches(req, g)]
        fitting = [(g, n) for g, n in matching if n >= req.gpu.count]
        if not fitting:
            return out(Constraint.GPU, _gpu_detail(req, matching, offers))
        gpu, free = min(fitting, key=lambda o: (o[0].cost_per_hour, o[0].model.casefold()))
        headroom.append((free - req.gpu.count) / gpu.count)
    cost = site.cost_per_hour + (req.gpu.count * gpu.cost_per_hour if gpu else 0.0)
    if req.max_cost_per_hour is not None and cost > req.max_cost_per_hour:
        return out(
            Constraint.MAX_COST,
            f"estimated cost {cost:g}/h exceeds the maximum {req.max_cost_per_hour:g}/h",
        )
    raw = (
        _nines(site.sla.availability),
        cost,
        sum(headroom) / len(headroom),
        fig.queue_wait_ms if fig else None,
        float(fig.recent_failures) if fig and fig.recent_failures is not None else None,
        fig.utilisation if fig else None,
        _locality(c, ask),
    )
    return _Fit(site.name, c, raw, cost, gpu.model if gpu else None)


def _configured(site: Site, ask: _Ask) -> tuple[Constraint, str] | None:
    """The first of the constraints only the site's entry decides (region, datacentre, labels,
    SLA) that the placement fails, and why; None when it meets them all."""
    req = ask.req
    if ask.regions and site.region.casefold() not in ask.regions:
        return Constraint.REGION, f"region {site.region!r} is not one of {list(req.regions)}"
    if ask.datacentres and (site.datacentre or "").casefold() not in ask.datacentres:
        return (
            Constraint.DATACENTRE,
            f"datacentre {site.datacentre!r} is not one of {list(req.datacentres)}",
        )
    for key in sorted(req.labels):
        if site.labels.get(key) != req.labels[key]:
            has = f"has {key}={site.labels[key]}" if key in site.labels else f"has no {key!r}"
            return Constraint.LABELS, f"needs label {key}={req.labels[key]}; site {has}"
    if req.min_availability is not None and site.sla.availability < req.min_availability:
        return (
            Constraint.AVAILABILITY,
            f"SLA availability {site.sla.availability} < {req.min_availability} asked",
        )
    return None


def _never(site: Site, ask: _Ask) -> bool:
    """Whether the site's configuration alone rules the placement out, whatever its live
    figures say (an excluded site's first failed constraint may be a live one that hides it:
    unreachable now, and in another region)."""
    req, cap = ask.req, site.capacity
    if _configured(site, ask) is not None or req.cpu > cap.cpus or req.memory_mb > cap.memory_mb:
        return True
    least = site.cost_per_hour
    if req.gpu.count > 0:
        ever = [g.cost_per_hour for g in cap.gpus
                if _gpu_matches(req, g) and g.count >= req.gpu.count]  # fmt: skip
        if not ever:
            return True
        least += req.gpu.count * min(ever)  # the cheapest GPUs that could ever take it
    return req.max_cost_per_hour is not None and least > req.max_cost_per_hour


def _score(fits: list[_Fit], prefs: Preferences) -> list[_Row]:
    weights = prefs.weights
    total = weights.total()
    share = [weights.of(c) / total for c in _CRITERIA]
    bounds: list[tuple[float, float] | None] = []
    for i in range(len(_CRITERIA)):
        known = [v for f in fits if (v := f.raw[i]) is not None]
        bounds.append((min(known), max(known)) if known else None)
    lower_better = [c in _LOWER_IS_BETTER for c in _CRITERIA]
    columns = list(zip(_CRITERIA, share, bounds, lower_better, strict=True))
    ranked: list[_Row] = []
    for fit in fits:
        breakdown = {
            criterion: round(weight * _normalise(value, bound, lower), DIGITS)
            for (criterion, weight, bound, lower), value in zip(columns, fit.raw, strict=True)
        }
        ranked.append(
            {
                "site": fit.name,
                "kind": fit.candidate.site.kind,
                "score": round(sum(breakdown.values()), DIGITS),
                "breakdown": breakdown,
                "estimated_cost_per_hour": round(fit.cost, DIGITS),
                "gpu_model": fit.gpu_model,
            }
        )
    return ranked


def _normalise(value: float | None, bounds: tuple[float, float] | None, lower: bool) -> float:
    if value is None or bounds is None:
        return UNKNOWN
    low, high = bounds
    if high <= low:
        return 1.0
    return (high - value) / (high - low) if lower else (value - low) / (high - low)


def _nines(availability: float) -> float:
    return min(MAX_NINES, -math.log10(max(1.0 - availability, 10.0**-MAX_NINES)))


def _locality(c: CandidateSite, ask: _Ask) -> float:
    site = c.site
    if site.datacentre and site.datacentre.casefold() in ask.near_datacentres:
        return 1.0
    if site.region.casefold() in ask.near_regions:
        return 0.5
    return 0.0


def _folded(names: tuple[str, ...]) -> frozenset[str]:
    return frozenset(n.casefold() for n in names)


def _gpu_matches(req: Requirements, gpu: GpuCapacity) -> bool:
    want = req.gpu
    if want.vendor is not None and want.vendor.casefold() != gpu.vendor.casefold():
        return False
    return want.model is None or gpu_model_matches(want.model, gpu.model)


def _free_gpus(c: CandidateSite, gpu: GpuCapacity) -> int:
    free = c.figures.free_gpus if c.figures is not None else None
    if free is None:
        return gpu.count
    return min(gpu.count, free.get(gpu.model.casefold(), 0))


def _gpu_detail(req: Requirements, matching: _Offers, offers: _Offers) -> str:
    want = req.gpu
    asked = (
        f"needs {want.count} GPU(s) of model {want.model or 'any'}, vendor {want.vendor or 'any'}"
    )

    def listed(items: _Offers) -> str:
        return ", ".join(f"{g.model} ({g.vendor}): {n} free of {g.count}" for g, n in items)

    if matching:
        return f"{asked}; the site has {listed(matching)}"
    if offers:
        return f"{asked}; the site has none of that kind, only {listed(offers)}"
    return f"{asked}; the site has no GPUs"


def _summary(total: int, ranked: list[_Row], excluded: list[_Row]) -> str:
    if total == 0:
        return "no sites to rank"
    why = Counter(str(e["constraint"]) for e in excluded)
    reasons = ", ".join(f"{k}: {n}" for k, n in sorted(why.items()))
    if not ranked:
        return f"no site meets the requirements; all {total} excluded ({reasons})"
    tail = f"; {len(excluded)} excluded ({reasons})" if excluded else ""
    return f"{len(ranked)} of {total} sites eligible, best {ranked[0]['site']!r}{tail}"
