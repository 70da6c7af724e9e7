"""The retrain and inference handlers keep the catalog's rules on a real bus (nats-server):
a training runs only for the namespace that owns the module, and a promoted artifact crafted to
run code on load is refused without running it."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from eventbus.connection import Bus
from eventbus.storage.local import LocalStorage
from eventbus.streams import ensure_layout
from functions.inference.handler import handle as infer
from functions.inference.models import InferenceInput
from functions.retrain.handler import handle as retrain
from functions.retrain.models import RetrainInput
from runtimes.catalog import CatalogForbiddenError, CatalogStore, Lineage, ModuleSpec
from runtimes.errors import ArtifactRefusedError, ModelInputError
from runtimes.types import Context
from tests.models.crafted import digits_format_1
from tests.models.samples import digits, png


@pytest.fixture
async def env(nats_url: str, tmp_path: Path) -> AsyncIterator[tuple[Bus, LocalStorage]]:
    bus = await Bus.connect(nats_url, name="test-catalog-owners", prefix="io.test")
    await ensure_layout(bus.js)
    storage = LocalStorage(tmp_path / "store")
    yield bus, storage
    await storage.close()
    await bus.close()


def ctx(env: tuple[Bus, LocalStorage], function: str) -> Context:
    return Context(
        activation_id=uuid.uuid4().hex,
        function=function,
        version=1,
        deadline=time.time() + 120,
        logger=logging.getLogger("test"),
        bus=env[0],
        storage=env[1],
    )


@pytest.fixture
async def module(env: tuple[Bus, LocalStorage]) -> str:
    """A digits module of the default namespace with its first version promoted."""
    name = f"o{uuid.uuid4().hex[:8]}"
    published = await CatalogStore(*env).publish(ModuleSpec(name=name, plugin="digits"))
    assert published.owner == "default"
    out = await retrain(RetrainInput(model=name, default=True), ctx(env, "retrain"))
    assert out.promoted and out.version == 1
    return name


async def test_a_retrain_of_another_namespace_is_refused(
    env: tuple[Bus, LocalStorage], module: str
) -> None:
    catalog = CatalogStore(*env)
    before = await catalog.get_module(module)
    # refused as final (`invalid`: no retry), with the rule as the reason
    with pytest.raises(ModelInputError, match="only the namespace that published") as caught:
        await retrain(RetrainInput(model=module, default=True), ctx(env, "tenant-b=retrain"))
    assert isinstance(caught.value.__cause__, CatalogForbiddenError)
    assert await catalog.get_module(module) == before
    assert [v.version for v in await catalog.list_versions(module)] == [1]


async def test_a_module_of_another_namespace_is_trained_by_its_own_retrain(
    env: tuple[Bus, LocalStorage],
) -> None:
    name = f"t{uuid.uuid4().hex[:8]}"
    mine = CatalogStore(*env, actor="tenant-b")
    assert (await mine.publish(ModuleSpec(name=name, plugin="digits"))).owner == "tenant-b"
    with pytest.raises(ModelInputError, match="may not train"):
        await retrain(RetrainInput(model=name, default=True), ctx(env, "retrain"))
    out = await retrain(RetrainInput(model=name, default=True), ctx(env, "tenant-b=retrain"))
    assert out.promoted and out.version == 1
    with pytest.raises(CatalogForbiddenError):
        await CatalogStore(*env).delete_module(name)
    await mine.delete_module(name)


async def test_a_promoted_artifact_that_runs_code_is_refused_at_load(
    env: tuple[Bus, LocalStorage], module: str, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    catalog = CatalogStore(*env)
    crafted = await catalog.add_version(
        module, digits_format_1(marker), metrics={"accuracy": 1.0}, lineage=Lineage()
    )
    await catalog.promote(module, crafted.version)
    data = digits()
    with pytest.raises(ArtifactRefusedError, match="format 1 is a pickle"):
        await infer(InferenceInput(model=module, data=png(data.x[1])), ctx(env, "inference"))
    assert not marker.exists()
    await catalog.rollback(module)  # the good version serves again
    out = await infer(InferenceInput(model=module, data=png(data.x[1])), ctx(env, "inference"))
    assert out.version == 1 and out.result["predictions"][0]["label"] == data.y[1]
    assert not marker.exists()
