"""The `deploy` function: template or spec -> runtime spec -> `rank` (via the platform) -> place.

The placement and the records are `runtimes.placement.placer` and
`runtimes.placement.deployments`; this wraps them: it reads the sites file, builds providers
(kept per worker process, so a local site's runtimes live as long as the worker), and asks
`rank` for the order of the sites.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Final

import orjson

import functions
from functions.deploy.models import DeployInput, DeployOutput
from functions.deploy.rank_client import call_function
from functions.deploy.settings import DeploySettings
from runtimes.errors import CapacityError, TemplateError
from runtimes.placement.deployments import Deployments, DeploymentStore
from runtimes.placement.placer import Placer
from runtimes.placement.ranking import (
    CandidateSite,
    Preferences,
    RankInput,
    RankOutput,
    Requirements,
)
from runtimes.placement.sites import load_sites
from runtimes.placement.tosca import TEMPLATES_DIR, load_topology
from runtimes.providers.gpus import Gpu
from runtimes.providers.k8s_manifests import ManifestOptions
from runtimes.providers.registry import ProviderOptions, ProviderRegistry
from runtimes.types import Context, RuntimeSpec

log = logging.getLogger(__name__)
ROOT: Final = Path(functions.__file__).resolve().parent.parent
_registries: dict[tuple[str, float], ProviderRegistry] = {}


async def handle(inp: DeployInput, ctx: Context) -> DeployOutput:
    """Run one deployment action."""
    settings = DeploySettings()
    registry = _registry(settings)
    await registry.listen(ctx.bus)  # local workers announce readiness on the bus
    service = _service(ctx, settings, registry)
    name = inp.name
    if inp.action in ("create", "update"):
        spec, source = to_spec(inp)
        name = name or spec.name
        placement = {"constraints": inp.constraints.model_dump(mode="json"),
                     "preferences": inp.preferences.model_dump(mode="json")}  # fmt: skip
        record = await service.apply(name, spec, placement, source)
        return DeployOutput(action=inp.action, deployment=record,
                            message=f"deployment {name!r} ready on {record.site!r}")  # fmt: skip
    if inp.action == "redeploy" and name:
        record = await service.redeploy(name)
        return DeployOutput(action=inp.action, deployment=record, message=f"on {record.site!r}")
    if inp.action == "delete" and name:
        record = await service.undeploy(name)
        return DeployOutput(action=inp.action, deployment=record, message="released")
    if inp.action == "get" and name:
        return DeployOutput(action=inp.action, deployment=await service.store.get(name))
    if inp.action == "reconcile":
        changed = await service.reconcile()
        return DeployOutput(action=inp.action, deployments=changed,
                            message=f"{len(changed)} deployment(s) placed again")  # fmt: skip
    return DeployOutput(action=inp.action, deployments=await service.store.list())


def to_spec(inp: DeployInput) -> tuple[RuntimeSpec, dict[str, Any]]:
    """The runtime spec the input asks for, and where it came from."""
    if inp.spec is not None:
        return inp.spec, {"kind": "spec"}
    if inp.template_path is not None:
        path = (TEMPLATES_DIR / inp.template_path).resolve()
        if not path.is_relative_to(TEMPLATES_DIR.resolve()) or not path.is_file():
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


def _registry(settings: DeploySettings) -> ProviderRegistry:
    path = Path(settings.sites_file)
    path = path if path.is_absolute() else ROOT / path
    key = (str(path), path.stat().st_mtime if path.exists() else 0.0)
    found = _registries.get(key)
    if found is None:
        gpus = None if settings.gpus is None else tuple(
            Gpu(g.index, g.model, g.memory_mb) for g in settings.gpus
        )  # fmt: skip
        options = ProviderOptions(
            # credentials references name environment variables of this process
            env=dict(os.environ),
            secrets_dir=Path(settings.secrets_dir) if settings.secrets_dir else None,
            local_gpus=gpus,
            kubernetes=ManifestOptions(
                image=settings.kubernetes_image,
                nats_url=settings.kubernetes_nats_url,
                env_secret=settings.kubernetes_worker_secret,
            ),
            kubernetes_ca_file=settings.kubernetes_ca_file,
        )
        found = _registries[key] = ProviderRegistry(load_sites(path), options)
    return found


def _service(ctx: Context, settings: DeploySettings, registry: ProviderRegistry) -> Deployments:
    async def ranker(spec: RuntimeSpec, placement: dict[str, Any]) -> list[str]:
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
        sites = [CandidateSite(site=s) for s in registry.all_sites() if not only or s.name in only]
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
            raise CapacityError(
                f"no site can take runtime {spec.name!r}: {ranking.message}; "
                + "; ".join(f"{k}: {v}" for k, v in excluded.items()),
                runtime=spec.name, excluded=excluded,
            )  # fmt: skip
        log.info("activation %s: ranking %s", ctx.activation_id,
                 orjson.dumps(ctx.annotations["ranking"]).decode())  # fmt: skip
        return [r.site for r in ranking.ranked]

    placer = Placer(ctx.bus, registry.get, ready_timeout_s=settings.ready_timeout_s)
    return Deployments(DeploymentStore(ctx.bus), placer, ranker)
