"""The model catalog: modules, versions, the promotion gate."""

from runtimes.catalog.errors import CatalogForbiddenError
from runtimes.catalog.gate import decide
from runtimes.catalog.store import CatalogStore
from runtimes.catalog.types import (
    ARTIFACT_BUCKET,
    CATALOG_KV,
    Artifact,
    GateDecision,
    Lineage,
    ModelVersion,
    Module,
    ModuleSpec,
    Resources,
    VersionState,
)

__all__ = [
    "ARTIFACT_BUCKET",
    "CATALOG_KV",
    "Artifact",
    "CatalogForbiddenError",
    "CatalogStore",
    "GateDecision",
    "Lineage",
    "ModelVersion",
    "Module",
    "ModuleSpec",
    "Resources",
    "VersionState",
    "decide",
]
