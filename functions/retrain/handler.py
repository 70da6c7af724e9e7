"""Train a new version of a catalog module, record it as a candidate, run the promotion gate.

Only a `retrain` of the namespace that owns the module may train it; the artifact is whatever
the plug-in's `train` writes (for digits: skops, loaded with a trusted-types check).
"""

from __future__ import annotations

import asyncio

from eventbus.namespaces import namespace_of
from functions.retrain.data import gather
from functions.retrain.models import RetrainInput, RetrainOutput
from runtimes.catalog import CatalogForbiddenError, CatalogStore, Lineage, VersionState
from runtimes.catalog.plugins import TrainResult, load_model_plugin
from runtimes.errors import ModelInputError
from runtimes.types import Context


async def handle(inp: RetrainInput, ctx: Context) -> RetrainOutput:
    """Gather the data, train in a thread, store the version, gate it."""
    if ctx.bus is None:
        raise RuntimeError("retrain needs the platform's bus (run it on a deepfaas worker)")
    name = inp.name
    ctx.annotations["model"] = name
    ctx.annotations["train_args"] = {
        k: v for k, v in inp.args.items() if k not in ("data", "images")
    }
    # a training adds versions: it acts for the namespace that runs it, which must own the module
    namespace = namespace_of(ctx.function)
    catalog = CatalogStore(ctx.bus, ctx.storage, actor=namespace)
    try:
        module = await catalog.check_owner(name)
    except CatalogForbiddenError as exc:
        # final, like bad input: the executor retries only errors, and this one would repeat
        raise ModelInputError(
            f"namespace {namespace!r} may not train {name!r}: {exc}", model=name
        ) from exc
    plugin = await asyncio.to_thread(load_model_plugin, module.plugin_name)
    training = await gather(inp, ctx.storage)
    args = {**inp.args, **training.args}
    result: TrainResult
    if inp.default:
        result = await asyncio.to_thread(plugin.train_default)
    else:
        result = await asyncio.to_thread(lambda: plugin.train(**args))
    ctx.logger.info("%s trained in %.2f s: %s", name, result.seconds, result.metrics)
    lineage = Lineage(
        data={**training.lineage, **result.data},
        plugin_version=result.plugin_version,
        activation=ctx.activation_id,
        train_args=ctx.annotations["train_args"],
    )
    version = await catalog.add_version(
        name, result.artifact, metrics=result.metrics, lineage=lineage, metric=result.metric
    )
    ctx.annotations["model_version"] = version.version
    if inp.promote == "gate" and version.state is VersionState.CANDIDATE:
        decision, version = await catalog.gate(name, version.version)
        reason = decision.reason
    else:
        reason = version.reason or "kept as a candidate (promote: never)"
    ctx.annotations["state"] = version.state.value
    ctx.logger.info("%s v%d is %s: %s", name, version.version, version.state.value, reason)
    return RetrainOutput(
        model=name,
        version=version.version,
        state=version.state.value,
        promoted=version.state is VersionState.PROMOTED,
        reason=reason,
        metrics=result.metrics,
        seconds=round(result.seconds, 3),
        data=lineage.data,
    )
