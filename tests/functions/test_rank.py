"""The `rank` function: hard constraints, weighted scoring, determinism, and its handler."""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from functions.rank.handler import INLINE_MAX_SITES, handle, rank
from functions.rank.models import (
    CandidateSite,
    Constraint,
    Criterion,
    RankInput,
    RankOutput,
    Weights,
)
from runtimes.placement.sites import SiteFigures, load_sites
from runtimes.types import Context, FunctionSpec
from runtimes.worker.loader import load_function

ROOT = Path(__file__).resolve().parents[2]


def site(name: str, **over: Any) -> dict[str, Any]:
    """A kubernetes site document; `gpus` is a list of (model, count, cost) or full dicts."""
    gpus = [
        g
        if isinstance(g, dict)
        else {"model": g[0], "vendor": "nvidia", "count": g[1], "cost_per_hour": g[2]}
        for g in over.pop("gpus", [])
    ]
    doc: dict[str, Any] = {
        "name": name,
        "kind": "kubernetes",
        "endpoint": f"https://{name}.example.org",
        "credentials": {"env": "TOKEN"},
        "region": over.pop("region", "eu"),
        "datacentre": over.pop("datacentre", None),
        "capacity": {
            "cpus": over.pop("cpus", 16),
            "memory_mb": over.pop("memory_mb", 32768),
            "gpus": gpus,
        },
        "cost_per_hour": over.pop("cost", 1.0),
        "sla": {"availability": over.pop("availability", 0.99)},
        "labels": over.pop("labels", {}),
    }
    figures = over.pop("figures", None)
    assert not over, over
    return {"site": doc, "figures": figures}


def ranking(*sites: dict[str, Any], **body: Any) -> RankOutput:
    return rank(RankInput.model_validate({**body, "sites": list(sites)}))


def names(out: RankOutput) -> list[str]:
    return [r.site for r in out.ranked]


def why(out: RankOutput) -> dict[str, Constraint]:
    return {e.site: e.constraint for e in out.excluded}


def test_gpu_request_lands_on_the_site_with_the_model() -> None:
    out = ranking(
        site("cpu-only", cost=0.1),
        site("t4s", gpus=[("t4", 8, 0.3)]),
        site("a100s", gpus=[("t4", 8, 0.3), ("NVIDIA A100-SXM4-80GB", 4, 2.0)], cost=5),
        requirements={"gpu": {"count": 2, "model": "a100", "vendor": "NVIDIA"}},
    )
    assert names(out) == ["a100s"] and out.best == "a100s"
    assert out.ranked[0].gpu_model == "NVIDIA A100-SXM4-80GB"
    assert out.ranked[0].estimated_cost_per_hour == pytest.approx(5 + 2 * 2.0)
    assert why(out) == {"cpu-only": Constraint.GPU, "t4s": Constraint.GPU}
    assert out.excluded[0].detail.endswith("the site has no GPUs")
    assert "none of that kind, only t4 (nvidia): 8 free of 8" in out.excluded[1].detail


def test_gpus_must_be_free_by_live_figures_and_of_the_vendor() -> None:
    out = ranking(
        site("busy", gpus=[("a100", 8, 1.0)], figures={"free_gpus": {"A100": 1}}),
        site("free", gpus=[("a100", 2, 1.0)], figures={"free_gpus": {"a100": 2}}),
        site("unknown", gpus=[("a100", 2, 1.0)]),
        site("amd", gpus=[{"model": "a100", "vendor": "amd", "count": 8}]),
        site("a10", gpus=[("a10", 8, 0.1)]),
        requirements={"gpu": {"count": 2, "model": "a100", "vendor": "nvidia"}},
    )
    assert sorted(names(out)) == ["free", "unknown"]
    assert why(out) == {"busy": Constraint.GPU, "amd": Constraint.GPU, "a10": Constraint.GPU}
    assert "1 free of 8" in next(e.detail for e in out.excluded if e.site == "busy")


def test_cheapest_fitting_gpu_model_is_chosen_when_any_model_will_do() -> None:
    out = ranking(
        site("mixed", gpus=[("a100", 4, 2.0), ("t4", 4, 0.3), ("v100", 1, 0.1)]),
        requirements={"gpu": {"count": 2}},
    )
    assert out.ranked[0].gpu_model == "t4"


def test_region_and_datacentre_constraints() -> None:
    sites = [
        site("bari", region="eu-south", datacentre="bari"),
        site("valencia", region="eu-west", datacentre="valencia"),
        site("virginia", region="us-east", datacentre="iad"),
        site("nowhere", region="eu-west"),
    ]
    out = ranking(*sites, requirements={"regions": ["eu-south", "EU-WEST"]})
    assert sorted(names(out)) == ["bari", "nowhere", "valencia"]
    assert why(out) == {"virginia": Constraint.REGION}
    out = ranking(*sites, requirements={"datacentres": ["valencia"]})
    assert names(out) == ["valencia"]
    assert set(why(out).values()) == {Constraint.DATACENTRE}


def test_max_cost_counts_the_gpus() -> None:
    out = ranking(
        site("cheap-base", cost=0.5, gpus=[("a100", 4, 3.0)]),
        site("cheap-gpu", cost=1.0, gpus=[("a100", 4, 1.0)]),
        requirements={"gpu": {"count": 2, "model": "a100"}, "max_cost_per_hour": 4.0},
    )
    assert names(out) == ["cheap-gpu"]
    assert why(out) == {"cheap-base": Constraint.MAX_COST}
    assert "6.5/h" in out.excluded[0].detail


def test_every_excluded_site_names_the_first_constraint_it_failed() -> None:
    out = ranking(
        site("down", region="us", cpus=1, figures={"reachable": False}),
        site("far-and-small", region="us", cpus=1),
        site("unlabelled", cpus=1, labels={"tier": "dev"}),
        site("flaky", cpus=1, labels={"tier": "prod"}, availability=0.9),
        site("small", cpus=1, labels={"tier": "prod"}, cost=100),
        site("full", labels={"tier": "prod"}, figures={"free_cpus": 8, "free_memory_mb": 10}),
        site("no-gpu", labels={"tier": "prod"}, cost=100),
        site("pricey", labels={"tier": "prod"}, cost=100, gpus=[("a100", 1, 0)]),
        site("ok", labels={"tier": "prod"}, gpus=[("a100", 1, 0)]),
        requirements={
            "cpu": 4,
            "memory_mb": 1024,
            "gpu": {"count": 1},
            "regions": ["eu"],
            "labels": {"tier": "prod"},
            "min_availability": 0.99,
            "max_cost_per_hour": 10,
        },
    )
    assert names(out) == ["ok"]
    assert why(out) == {
        "down": Constraint.REACHABLE,
        "far-and-small": Constraint.REGION,
        "unlabelled": Constraint.LABELS,
        "flaky": Constraint.AVAILABILITY,
        "small": Constraint.CPU,
        "full": Constraint.MEMORY,
        "no-gpu": Constraint.GPU,
        "pricey": Constraint.MAX_COST,
    }
    assert [e.site for e in out.excluded] == sorted(why(out))
    assert all(e.detail for e in out.excluded)
    assert "needs label tier=prod; site has tier=dev" in out.excluded[-1].detail
    # Each also fails something its configuration decides (down: its region; full: it has no
    # GPU), whatever its first failed constraint: every exclusion lasts.
    assert all(e.lasting for e in out.excluded)


def test_an_exclusion_lasts_only_when_the_site_could_never_take_it() -> None:
    def lasting(requirements: dict[str, Any], **over: Any) -> bool:
        out = ranking(site("s", **over), requirements=requirements)
        assert len(out.excluded) == 1, out
        return out.excluded[0].lasting

    assert lasting({"cpu": 32}, cpus=16)
    assert not lasting({"cpu": 8}, cpus=16, figures={"free_cpus": 4})
    assert lasting({"memory_mb": 64000}, memory_mb=32768, figures={"free_memory_mb": 10})
    assert not lasting({"memory_mb": 2048}, figures={"free_memory_mb": 1024})
    # a live constraint failed first hides a lasting one: busy CPUs and too little memory,
    # unreachable and in another region
    assert lasting({"cpu": 8, "memory_mb": 64000}, memory_mb=4096, figures={"free_cpus": 1})
    assert lasting({"regions": ["us"]}, region="eu", figures={"reachable": False})
    assert not lasting({"regions": ["eu"]}, region="eu", figures={"reachable": False})
    gpus = {"gpu": {"count": 2, "model": "a100"}}
    assert lasting(gpus, gpus=[("a100", 1, 1.0), ("t4", 8, 0.1)])
    assert not lasting(gpus, gpus=[("a100", 4, 1.0)], figures={"free_gpus": {"a100": 1}})
    # The cheap A100s are busy: the dear ones would exceed the budget, the cheap ones not.
    budget = {**gpus, "max_cost_per_hour": 4.0}
    assert lasting(budget, cost=1.0, gpus=[("a100", 2, 5.0)])
    assert not lasting(
        budget, cost=1.0, gpus=[("a100", 2, 5.0), ("A100-PCIe", 2, 1.0)],
        figures={"free_gpus": {"a100": 2, "a100-pcie": 0}},
    )  # fmt: skip


def test_weights_change_the_order() -> None:
    cheap = site("cheap", cost=0.1, availability=0.95)
    solid = site("solid", cost=3.0, availability=0.9995)
    nothing = {c.value: 0.0 for c in Criterion}
    by_cost = {"weights": {**nothing, "cost": 1.0}}
    by_sla = {"weights": {**nothing, "availability": 1.0}}
    assert names(ranking(cheap, solid, preferences=by_cost)) == ["cheap", "solid"]
    assert names(ranking(solid, cheap, preferences=by_sla)) == ["solid", "cheap"]
    # Default weights favour the SLA over the price a little: 0.25 against 0.20.
    assert names(ranking(cheap, solid)) == ["solid", "cheap"]
    assert Weights().availability > Weights().cost
    lean = {"weights": {"cost": 0.5}}
    assert names(ranking(cheap, solid, preferences=lean)) == ["cheap", "solid"]


def test_live_figures_and_locality_shape_the_scores() -> None:
    sites = [
        site("queued", figures={"queue_wait_ms": 9000, "recent_failures": 0}),
        site("failing", figures={"queue_wait_ms": 10, "recent_failures": 7}),
        site("blind", region="eu-south"),
    ]
    only = {c.value: 0.0 for c in Criterion}
    out = ranking(*sites, preferences={"weights": {**only, "queue_wait": 1}})
    assert names(out) == ["failing", "blind", "queued"]
    assert out.ranked[1].score == 0.5  # unknown figure: neutral
    out = ranking(*sites, preferences={"weights": {**only, "failures": 1}})
    assert names(out) == ["queued", "blind", "failing"]
    near = {"weights": {**only, "locality": 1}, "preferred_regions": ["eu-south"]}
    assert names(ranking(*sites, preferences=near)) == ["blind", "failing", "queued"]


def test_breakdown_adds_up_and_ties_break_by_name() -> None:
    out = ranking(site("b"), site("c"), site("a"), site("d", cost=2.0))
    assert names(out) == ["a", "b", "c", "d"]
    for ranked in out.ranked:
        assert set(ranked.breakdown) == set(Criterion)
        assert sum(ranked.breakdown.values()) == pytest.approx(ranked.score, abs=1e-8)
        assert 0.0 <= ranked.score <= 1.0
    # Best on every known criterion; the three live ones are unknown, so each counts half.
    assert out.ranked[0].score == pytest.approx(1.0 - 0.5 * (0.15 + 0.15 + 0.05))
    assert out.ranked[0].breakdown[Criterion.COST] == pytest.approx(0.2)
    assert out.ranked[3].breakdown[Criterion.COST] == 0.0


def generated(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    models = ["a100", "h100", "t4", "v100"]
    return [
        site(
            f"s{i:04d}",
            region=rnd.choice(["eu", "us", "asia"]),
            cost=round(rnd.random() * 5, 2),
            availability=rnd.choice([0.9, 0.99, 0.995, 0.999]),
            cpus=rnd.choice([4, 16, 64]),
            gpus=[(m, rnd.randint(1, 8), 1.0) for m in rnd.sample(models, rnd.randint(0, 2))],
            figures=None
            if i % 5 == 0
            else {
                "free_gpus": {m: rnd.randint(0, 8) for m in models},
                "queue_wait_ms": rnd.random() * 1000,
                "recent_failures": rnd.randint(0, 3),
                "utilisation": rnd.random(),
                "reachable": rnd.random() > 0.02,
            },
        )
        for i in range(n)
    ]


def test_deterministic_whatever_the_order_of_the_sites() -> None:
    sites = generated(200)
    body = {"requirements": {"cpu": 8, "gpu": {"count": 1}, "regions": ["eu", "us"]}}
    first = ranking(*sites, **body).model_dump_json()
    assert ranking(*sites, **body).model_dump_json() == first
    shuffled = sites[:]
    random.Random(1).shuffle(shuffled)
    assert ranking(*shuffled, **body).model_dump_json() == first


def test_a_thousand_sites_are_all_accounted_for() -> None:
    out = ranking(*generated(1000), requirements={"cpu": 8, "gpu": {"count": 2}})
    assert len(out.ranked) + len(out.excluded) == 1000
    assert out.ranked and out.excluded
    keys = [(-r.score, r.site) for r in out.ranked]
    assert keys == sorted(keys)
    assert out.message.startswith(f"{len(out.ranked)} of 1000 sites eligible")


def test_no_sites_or_none_eligible_is_a_clear_answer() -> None:
    empty = ranking()
    assert (empty.ranked, empty.excluded, empty.best) == ([], [], None)
    assert empty.message == "no sites to rank"
    out = ranking(site("a"), site("b", region="us"), requirements={"gpu": {"count": 1}})
    assert out.ranked == [] and out.best is None and len(out.excluded) == 2
    assert out.message == "no site meets the requirements; all 2 excluded (gpu: 2)"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"sites": [site("a"), site("a")]}, "duplicate site name 'a'"),
        ({"preferences": {"weights": dict.fromkeys(Criterion, 0)}}, "one weight must be positive"),
        ({"sites": [{"site": {**site("a")["site"], "kind": "mesos"}}]}, "unknown site kind"),
        ({"sites": [{"site": {**site("a")["site"], "credentials": None}}]}, "credentials"),
        ({"requirements": {"gpu": {"count": -1}}}, "greater than or equal to 0"),
    ],
)
def test_bad_input_is_a_clear_error(body: dict[str, Any], words: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=words):
        RankInput.model_validate(body)


async def test_handler_ranks_the_example_sites_file() -> None:
    sites = load_sites(ROOT / "infra" / "sites.yaml").sites
    inp = RankInput(
        requirements={"gpu": {"count": 1, "model": "t4"}},
        sites=tuple(CandidateSite(site=s, figures=SiteFigures()) for s in sites),
    )
    ctx = Context("act-1", "rank", 1, time.time() + 10, logging.getLogger("test"))
    out = await handle(inp, ctx)
    assert out.best == "k8s-gpu" and {e.site for e in out.excluded} == {"local", "openwhisk"}


async def test_handler_ranks_large_inputs_off_the_event_loop() -> None:
    inp = RankInput.model_validate({"sites": generated(INLINE_MAX_SITES + 1)})
    ctx = Context("act-3", "rank", 1, time.time() + 10, logging.getLogger("test"))
    out = await handle(inp, ctx)
    assert out == rank(inp) and len(out.ranked) + len(out.excluded) == INLINE_MAX_SITES + 1


async def test_function_spec_loads_and_validates_input() -> None:
    spec = FunctionSpec.model_validate(
        yaml.safe_load((ROOT / "functions" / "rank" / "function.yaml").read_text())
    )
    assert spec.name == "rank" and spec.handler == "functions.rank.handler:handle"
    loaded = load_function(spec)
    assert loaded.is_async and loaded.takes_context and loaded.input_adapter is not None
    inp = loaded.input_adapter.validate_python({"sites": [site("a"), site("b", cost=0.1)]})
    ctx = Context("act-2", "rank", 1, time.time() + 10, logging.getLogger("test"))
    out = await loaded.handler(inp, ctx)
    assert loaded.output_adapter is not None
    dumped = loaded.output_adapter.dump_python(out, mode="json")
    assert dumped["best"] == "b" and dumped["ranked"][0]["breakdown"]["cost"] == 0.2
