"""A catalog module spec from an installed model plug-in (the catalog API and the CLI's
`deepfaas model publish` both describe a plug-in this way)."""

from __future__ import annotations

from runtimes.catalog.plugins import load_model_plugin
from runtimes.catalog.types import ModuleSpec


def spec_from_plugin(plugin: str) -> ModuleSpec:
    """A module spec from an installed plug-in's metadata and argument schemas."""
    loaded = load_model_plugin(plugin)
    meta = loaded.get_metadata()
    return ModuleSpec(
        name=plugin,
        title=str(meta.get("title") or meta.get("name") or plugin)[:200],
        description=meta.get("description", ""),
        keywords=list(meta.get("keywords", [])),
        license=meta.get("license", ""),
        author=meta.get("author", ""),
        url=meta.get("url"),
        framework=meta.get("framework", ""),
        input_schema=loaded.predict_schema(),
        train_schema=loaded.train_schema(),
        metric=meta.get("metric", "accuracy"),
    )
