"""The `deploy` function: template or spec -> runtime spec -> `rank` (via the platform) -> place.

A thin client of the control plane: the leading controller owns placement, the providers and
the deployment records (`runtimes.control.deployments`), so a runtime lives until it is
deleted, not as long as this worker. Here the input becomes a runtime spec (TOSCA parsed
offline), `rank` orders the sites the controller names, and the controller places.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from eventbus.errors import DeepfaasError
from functions.deploy.models import DeployInput, DeployOutput
from functions.deploy.rank_client import call_function
from functions.deploy.settings import DeploySettings
from functions.errors import InvalidInputError
from runtimes.control.deployments_client import DeploymentsClient, Ranking, error_body
from runtimes.errors import CapacityError
from runtimes.placement.placer import PlacementError
from runtimes.placement.ranking import (
    CandidateSite,
    Preferences,
    RankInput,
    RankOutput,
    Requirements,
)
from runtimes.placement.requests import to_spec
from runtimes.types import Context, RuntimeSpec

log = logging.getLogger(__name__)
__all__ = ["handle", "to_spec"]


async def handle(inp: DeployInput, ctx: Context) -> DeployOutput:
    """Run one deployment action."""
    settings = DeploySettings()
    client = DeploymentsClient(ctx.bus, timeout=max(1.0, ctx.remaining()))
    name = inp.name
    if inp.action in ("create", "update"):
        spec, source = to_spec(inp)
        name = name or spec.name
        placement = {"constraints": inp.constraints.model_dump(mode="json"),
                     "preferences": inp.preferences.model_dump(mode="json")}  # fmt: skip
        ranking = await _rank(client, ctx, settings, spec, placement)
        record = await client.create(name, spec, placement, source, ranking)
        return DeployOutput(action=inp.action, deployment=record,
                            message=f"deployment {name!r} ready on {record.site!r}")  # fmt: skip
    if inp.action == "redeploy" and name:
        old = await client.get(name)
        # its constraints are the record's, not this request's: none is the caller's fault
        ranking = await _rank(client, ctx, settings, old.spec, old.placement, strict=False)
        record = await client.redeploy(name, ranking)
        return DeployOutput(action=inp.action, deployment=record, message=f"on {record.site!r}")
    if inp.action == "delete" and name:
        record = await client.delete(name)
        return DeployOutput(action=inp.action, deployment=record, message="released")
    if inp.action == "get" and name:
        return DeployOutput(action=inp.action, deployment=await client.get(name))
    if inp.action == "reconcile":
        changed = await client.reconcile()
        return DeployOutput(action=inp.action, deployments=changed,
                            message=f"{len(changed)} deployment(s) placed again")  # fmt: skip
    return DeployOutput(action=inp.action, deployments=await client.list())


async def _rank(
    client: DeploymentsClient, ctx: Context, settings: DeploySettings,
    spec: RuntimeSpec, placement: dict[str, Any], *, strict: bool = True,
) -> Ranking:  # fmt: skip
    """The sites to try, best first, as `rank` orders them; or why there are none (the
    controller records a failed deployment with that reason, as with any failed placement).

    Constraints that no configured site can ever meet (a site name that does not exist, a
    region or label no site has, more than any site holds) are the request's fault:
    `InvalidInputError`, nothing recorded; not ``strict`` (a redeploy, on the constraints
    recorded), a failed placement like any other.
    """
    try:
        return Ranking(sites=await _ranked(client, ctx, settings, spec, placement))
    except InvalidInputError as exc:
        if strict:
            raise
        return Ranking(error={**error_body(exc), "code": PlacementError.code})
    except DeepfaasError as exc:
        return Ranking(error=error_body(exc))


async def _ranked(
    client: DeploymentsClient, ctx: Context, settings: DeploySettings,
    spec: RuntimeSpec, placement: dict[str, Any],
) -> list[str]:  # fmt: skip
    constraints = placement.get("constraints") or {}
    only = set(constraints.get("sites") or ())
    requirements = Requirements(
        cpu=spec.cpu, memory_mb=spec.memory_mb, gpu=spec.gpu,
        regions=tuple(constraints.get("regions") or ()),
        datacentres=tuple(constraints.get("datacentres") or ()),
        labels=constraints.get("labels") or {},
        min_availability=constraints.get("min_availability"),
        max_cost_per_hour=constraints.get("max_cost_per_hour"),
    )  # fmt: skip
    known = await client.sites()
    unknown = sorted(only - {s.name for s in known})
    if unknown:
        raise InvalidInputError(
            f"constraints.sites names sites that do not exist: {', '.join(unknown)} "
            f"(the sites are: {', '.join(sorted(s.name for s in known))})",
            unknown=unknown,
        )
    sites = [CandidateSite(site=s) for s in known if not only or s.name in only]
    rank_input = RankInput(
        requirements=requirements,
        preferences=Preferences.model_validate(placement.get("preferences") or {}),
        sites=tuple(sites),
    )
    result = await call_function(
        ctx.bus, "rank", rank_input.model_dump_json(exclude_none=True).encode(),
        cause=ctx.activation_id, timeout=settings.rank_timeout_s,
    )  # fmt: skip
    ranking = RankOutput.model_validate(result)
    ctx.annotations["ranking"] = [r.site for r in ranking.ranked]
    if not ranking.ranked:
        excluded = {e.site: f"{e.constraint}: {e.detail}" for e in ranking.excluded}
        message = f"no site can take runtime {spec.name!r}: {ranking.message}; " + "; ".join(
            f"{k}: {v}" for k, v in excluded.items()
        )
        if all(e.lasting for e in ranking.excluded):
            raise InvalidInputError(message, runtime=spec.name, excluded=excluded)
        raise CapacityError(message, runtime=spec.name, excluded=excluded)
    log.info("activation %s: ranking %s", ctx.activation_id,
             orjson.dumps(ctx.annotations["ranking"]).decode())  # fmt: skip
    return [r.site for r in ranking.ranked]
