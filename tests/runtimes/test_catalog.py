"""The catalog store against a real nats-server (KV + events) and the local storage backend."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from eventbus.connection import Bus
from eventbus.errors import ConflictError
from eventbus.storage.local import LocalStorage
from eventbus.streams import ensure_layout
from runtimes.catalog import CATALOG_KV, CatalogStore, Lineage, ModuleSpec, VersionState
from runtimes.errors import ModelError, ModelNotFoundError
from tests.support import eventually


@pytest.fixture
async def catalog(nats_url: str, tmp_path: Path) -> AsyncIterator[CatalogStore]:
    bus = await Bus.connect(nats_url, name="test-catalog", prefix="io.test")
    await ensure_layout(bus.js)
    storage = LocalStorage(tmp_path / "store")
    yield CatalogStore(bus, storage)
    await storage.close()
    await bus.close()


@pytest.fixture
def name() -> str:
    return f"m{uuid.uuid4().hex[:10]}"


async def _events(catalog: CatalogStore, name: str) -> tuple[list[dict[str, object]], object]:
    seen: list[dict[str, object]] = []

    async def got(msg: object) -> None:
        headers = getattr(msg, "headers", None) or {}
        if headers.get("ce-source") == f"/catalog/modules/{name}":
            seen.append({"type": headers["ce-type"], "data": orjson.loads(msg.data)})  # type: ignore[attr-defined]

    sub = await catalog.bus.nc.subscribe("events.catalog.>", cb=got)
    return seen, sub


async def _version(catalog: CatalogStore, name: str, accuracy: float, run: str | None = None):  # type: ignore[no-untyped-def]
    return await catalog.add_version(
        name,
        f"artifact {accuracy} {run}".encode(),
        metrics={"accuracy": accuracy},
        lineage=Lineage(activation=run, data={"rows": 10}),
    )


async def test_publish_version_gate_promote_and_events(catalog: CatalogStore, name: str) -> None:
    seen, sub = await _events(catalog, name)
    module = await catalog.publish(ModuleSpec(name=name, description="a test", keywords=["x"]))
    assert module.promoted is None and module.latest == 0
    with pytest.raises(ConflictError):
        await catalog.publish(ModuleSpec(name=name))
    first = await _version(catalog, name, 0.90)
    assert (first.version, first.state) == (1, VersionState.CANDIDATE)
    assert await catalog.read_artifact(first) == b"artifact 0.9 None"
    decision, first = await catalog.gate(name, 1)
    assert decision.promote and first.state is VersionState.PROMOTED
    assert (await catalog.promoted(name)).version == 1

    better = await _version(catalog, name, 0.895)  # within the default tolerance of 0.01
    assert better.lineage.parent == 1
    decision, better = await catalog.gate(name, 2)
    assert decision.promote, decision.reason
    assert (await catalog.get_version(name, 1)).state is VersionState.CANDIDATE

    worse = await _version(catalog, name, 0.10)
    decision, worse = await catalog.gate(name, 3)
    assert not decision.promote
    assert worse.state is VersionState.CANDIDATE and "kept as a candidate" in (worse.reason or "")
    assert (await catalog.promoted(name)).version == 2

    await eventually(lambda: len(seen) >= 7)  # the seven events below have arrived
    await sub.unsubscribe()  # type: ignore[attr-defined]
    kinds = [str(e["type"]).removeprefix("io.test.catalog.") for e in seen]
    assert kinds == [
        "module.published",
        "model.version.created",
        "model.version.promoted",
        "model.version.created",
        "model.version.promoted",
        "model.version.created",
        "model.version.rejected",
    ]


async def test_rollback_retire_and_errors(catalog: CatalogStore, name: str) -> None:
    await catalog.publish(ModuleSpec(name=name))
    for accuracy in (0.8, 0.9, 0.95):
        version = await _version(catalog, name, accuracy)
        await catalog.promote(name, version.version)
    rolled = await catalog.rollback(name)
    assert rolled.version == 2 and rolled.state is VersionState.PROMOTED
    assert "rolled back from 3" in (rolled.reason or "")
    with pytest.raises(ConflictError, match="promoted one"):
        await catalog.retire(name, 2)
    retired = await catalog.retire(name, 1, reason="bad data")
    assert retired.state is VersionState.RETIRED
    with pytest.raises(ConflictError, match="retired"):
        await catalog.promote(name, 1)
    assert (await catalog.rollback(name)).version == 3  # walks back past the current one
    with pytest.raises(ModelNotFoundError, match=r"no version 9 \(versions: \[1, 2, 3\]\)"):
        await catalog.get_version(name, 9)
    with pytest.raises(ModelNotFoundError, match="no module"):
        await catalog.get_module("no-such-module")


async def test_the_module_s_pointer_decides_which_version_reads_as_promoted(
    catalog: CatalogStore, name: str
) -> None:
    """A promotion moves the module's pointer, then writes the versions' states: a reader in
    between (CI saw one: the module serving 2, version 2 a `candidate`), or a crash in between,
    must not see the module serve a version that says otherwise. The crash is made here by
    moving the pointer alone, as the first step of `promote` does."""
    await catalog.publish(ModuleSpec(name=name))
    for accuracy in (0.8, 0.9):
        await _version(catalog, name, accuracy)
    await catalog.promote(name, 1)
    kv = await catalog.bus.js.key_value(CATALOG_KV)
    entry = await kv.get(f"modules.{name}")
    module = orjson.loads(entry.value)
    await kv.update(f"modules.{name}", orjson.dumps({**module, "promoted": 2}), entry.revision)
    stored = orjson.loads((await kv.get(f"versions.{name}.2")).value)
    assert stored["state"] == "candidate"  # the states were not written

    assert (await catalog.get_version(name, 2)).state is VersionState.PROMOTED
    assert (await catalog.get_version(name, 1)).state is VersionState.CANDIDATE
    assert (await catalog.promoted(name)).state is VersionState.PROMOTED
    states = {v.version: v.state for v in await catalog.list_versions(name)}
    assert states == {1: VersionState.CANDIDATE, 2: VersionState.PROMOTED}
    await catalog.retire(name, 1)
    assert (await catalog.get_version(name, 1)).state is VersionState.RETIRED


async def test_retried_training_run_adds_one_version(catalog: CatalogStore, name: str) -> None:
    await catalog.publish(ModuleSpec(name=name))
    first = await _version(catalog, name, 0.9, run="act-1")
    again = await _version(catalog, name, 0.9, run="act-1")
    assert again.version == first.version == 1
    assert [v.version for v in await catalog.list_versions(name)] == [1]


async def test_concurrent_versions_get_distinct_numbers(catalog: CatalogStore, name: str) -> None:
    await catalog.publish(ModuleSpec(name=name))
    made = await asyncio.gather(*(_version(catalog, name, 0.5, run=f"r{i}") for i in range(8)))
    assert sorted(v.version for v in made) == list(range(1, 9))


async def test_tampered_artifact_is_refused(catalog: CatalogStore, name: str) -> None:
    await catalog.publish(ModuleSpec(name=name))
    version = await _version(catalog, name, 0.9)
    assert catalog.storage is not None
    await catalog.storage.put(version.artifact.bucket, version.artifact.key, b"something else")
    with pytest.raises(ModelError, match="checksum"):
        await catalog.read_artifact(version)


async def test_search(catalog: CatalogStore, name: str) -> None:
    await catalog.publish(
        ModuleSpec(name=name, title="Plankton", keywords=["Ocean"], framework="pytorch")
    )
    names = lambda found: [m.name for m in found]  # noqa: E731
    assert name in names(await catalog.list_modules(query="plank"))
    assert name in names(await catalog.list_modules(keyword="ocean"))
    assert name not in names(await catalog.list_modules(framework="scikit-learn"))
    assert name not in names(await catalog.list_modules(query="zebra"))
