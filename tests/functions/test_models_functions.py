"""The inference and retrain handlers on a real bus (nats-server) and the local storage backend.

The handlers get the same `Context` a worker gives them (bus, storage, annotations); the
worker itself is exercised end to end in tests/e2e/test_models_loop.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from eventbus.connection import Bus
from eventbus.storage.errors import NoSuchKeyError
from eventbus.storage.local import LocalStorage
from eventbus.streams import ensure_layout
from functions.inference.handler import handle as infer
from functions.inference.models import InferenceInput
from functions.inference.server import KEEP_VERSIONS
from functions.retrain.handler import handle as retrain
from functions.retrain.models import RetrainInput
from runtimes.catalog import CatalogStore, Lineage, ModuleSpec
from runtimes.errors import ModelInputError, ModelNotFoundError
from runtimes.types import Context
from tests.models.samples import csv_bytes, digits, npy, png


@pytest.fixture
async def env(nats_url: str, tmp_path: Path) -> AsyncIterator[tuple[Bus, LocalStorage]]:
    bus = await Bus.connect(nats_url, name="test-functions", prefix="io.test")
    await ensure_layout(bus.js)
    storage = LocalStorage(tmp_path / "store")
    yield bus, storage
    await storage.close()
    await bus.close()


def ctx(env: tuple[Bus, LocalStorage], name: str) -> Context:
    return Context(
        activation_id=uuid.uuid4().hex,
        function=name,
        version=1,
        deadline=time.time() + 120,
        logger=logging.getLogger("test"),
        bus=env[0],
        storage=env[1],
    )


@pytest.fixture
async def module(env: tuple[Bus, LocalStorage]) -> str:
    name = f"d{uuid.uuid4().hex[:8]}"
    await CatalogStore(*env).publish(ModuleSpec(name=name, plugin="digits"))
    c = ctx(env, "retrain")
    out = await retrain(RetrainInput(model=name, default=True), c)
    assert out.promoted and out.version == 1 and out.metrics["accuracy"] > 0.95
    assert c.annotations == {
        "model": name,
        "model_version": 1,
        "state": "promoted",
        "train_args": {},
    }
    return name


async def test_inference_serves_the_promoted_version_and_a_pinned_one(
    env: tuple[Bus, LocalStorage], module: str
) -> None:
    data = digits()
    c = ctx(env, "inference")
    out = await infer(InferenceInput(model=module, data=png(data.x[4])), c)
    assert out.version == 1 and out.result["predictions"][0]["label"] == data.y[4]
    assert c.annotations["model_version"] == 1 and c.annotations["loaded"] is True

    csv = csv_bytes(data.x, data.y)
    trained = await retrain(RetrainInput(model=module, data=csv, promote="never"), ctx(env, "r"))
    assert (trained.version, trained.state, trained.promoted) == (2, "candidate", False)
    again = await infer(InferenceInput(model=module, data=png(data.x[4])), ctx(env, "i"))
    assert again.version == 1  # a candidate is not served unless pinned
    pinned = await infer(
        InferenceInput(model=module, version=2, data=npy(data.x[:3])), ctx(env, "i")
    )
    assert pinned.version == 2 and len(pinned.result["predictions"]) == 3


async def test_a_promotion_is_served_by_the_very_next_call(
    env: tuple[Bus, LocalStorage], module: str
) -> None:
    """Each call reads the promoted version: a promotion either way is what the next call is
    served by, and a version loaded once stays loaded for when it is promoted again."""
    data = digits()
    catalog = CatalogStore(*env)
    trained = await retrain(RetrainInput(model=module, data=csv_bytes(data.x, data.y),
                                         promote="never"), ctx(env, "r"))  # fmt: skip
    served = []
    for promote in (None, 2, 1, None):
        if promote is not None:
            await catalog.promote(module, promote)
        c = ctx(env, "inference")
        out = await infer(InferenceInput(model=module, data=png(data.x[7])), c)
        assert out.result["predictions"][0]["label"] == data.y[7]
        served.append((out.version, c.annotations["model_version"], c.annotations["loaded"]))
    assert trained.version == 2
    # v1 loaded by the first call, v2 by the second; the third is v1 again, still loaded
    assert served == [(1, 1, True), (2, 2, True), (1, 1, False), (1, 1, False)]


async def test_an_answer_started_before_the_catalog_read_is_dropped_when_it_names_another(
    env: tuple[Bus, LocalStorage], module: str
) -> None:
    """A call starts predicting with the version that served the same ask last while it reads
    the catalog. Version 2 is trained on shuffled labels, so it answers the same inputs
    otherwise than version 1: the call after its promotion gets version 2's answers, not the
    early ones of version 1; and a pinned version retired since it last served is refused,
    though it is still loaded."""
    data = digits()
    catalog = CatalogStore(*env)
    labels = data.y[np.random.default_rng(7).permutation(len(data.y))]
    await retrain(RetrainInput(model=module, data=csv_bytes(data.x, labels), promote="never"),
                  ctx(env, "r"))  # fmt: skip
    inputs = npy(data.x[:40])

    async def labels_of(version: int | None) -> tuple[int, list[int]]:
        out = await infer(InferenceInput(model=module, version=version, data=inputs),
                          ctx(env, "inference"))  # fmt: skip
        return out.version, [p["label"] for p in out.result["predictions"]]

    first, by_one = await labels_of(None)
    pinned, by_two = await labels_of(2)
    assert (first, pinned) == (1, 2) and by_one != by_two
    await catalog.promote(module, 2)
    assert await labels_of(None) == (2, by_two)
    assert await labels_of(None) == (2, by_two)
    await catalog.promote(module, 1)
    assert await labels_of(None) == (1, by_one)

    await catalog.retire(module, 2, reason="shuffled")
    with pytest.raises(ModelNotFoundError, match="retired"):
        await labels_of(2)


async def test_the_version_in_use_is_the_last_dropped_though_answered_early(
    env: tuple[Bus, LocalStorage], module: str
) -> None:
    """A worker keeps `KEEP_VERSIONS` versions loaded and drops the one used least recently;
    the promoted version's calls (answered by the early prediction) count as uses: pinned
    calls to more versions than that evict those, never the one between them."""
    data = digits()
    catalog = CatalogStore(*env)
    artifact = await catalog.read_artifact(await catalog.get_version(module, 1))
    extra = [
        await catalog.add_version(
            module, artifact, metrics={"accuracy": 0.9}, lineage=Lineage(data={"copy": n})
        )
        for n in range(KEEP_VERSIONS + 1)
    ]

    async def loaded(version: int | None) -> bool:
        c = ctx(env, "inference")
        await infer(InferenceInput(model=module, version=version, data=png(data.x[3])), c)
        return bool(c.annotations["loaded"])

    await loaded(None)
    for version in extra:
        assert await loaded(version.version)
        assert not await loaded(None), f"the promoted version was dropped for {version.version}"


async def test_a_failed_call_still_names_the_version_the_catalog_gave(
    env: tuple[Bus, LocalStorage], module: str
) -> None:
    """The catalog is read beside the input: a missing input object fails the call, and its
    record still says which model and version it was for; a missing model is the error named
    though the input is missing too."""
    _, storage = env
    await storage.create_bucket("inputs")
    c = ctx(env, "inference")
    missing = {"bucket": "inputs", "key": "no/such.png"}
    with pytest.raises(NoSuchKeyError):
        await infer(InferenceInput.model_validate({"model": module, "object": missing}), c)
    assert (c.annotations["model"], c.annotations["model_version"]) == (module, 1)
    with pytest.raises(ModelNotFoundError):
        await infer(
            InferenceInput.model_validate({"model": "no-such-model", "object": missing}),
            ctx(env, "inference"),
        )


async def test_stored_inputs_and_stored_training_sets(
    env: tuple[Bus, LocalStorage], module: str
) -> None:
    _, storage = env
    data = digits()
    await storage.create_bucket("train")
    for i in range(200):
        await storage.put("train", f"set-a/{data.y[i]}/{i}.png", png(data.x[i]))
    await storage.put("train", "set-a/notes.txt", b"not an image")
    marker = await storage.put("train", "set-a/_READY", b"")
    out = await retrain(
        RetrainInput.model_validate(
            {"model": module, "object": {"bucket": marker.bucket, "key": marker.key}}
        ),
        ctx(env, "retrain"),
    )
    assert out.data["images"] == 200 and out.data["skipped"] == 1
    assert out.version == 2

    await storage.create_bucket("inputs")
    info = await storage.put("inputs", "a/b/digit.png", png(data.x[9]))
    answer = await infer(
        InferenceInput.model_validate(
            {"model": module, "object": {"bucket": info.bucket, "key": info.key}}
        ),
        ctx(env, "inference"),
    )
    assert answer.input is not None and answer.input.key == "a/b/digit.png"


async def test_waiting_inputs_are_batched(env: tuple[Bus, LocalStorage], module: str) -> None:
    data = digits()
    contexts = [ctx(env, "inference") for _ in range(24)]
    outs = await asyncio.gather(
        *(
            infer(InferenceInput(model=module, data=png(data.x[i])), c)
            for i, c in enumerate(contexts)
        )
    )
    assert [o.result["predictions"][0]["label"] for o in outs] == list(data.y[:24])
    assert max(c.annotations["batch"] for c in contexts) > 1


@pytest.mark.parametrize(
    ("inp", "error", "message"),
    [
        ({"data": b"\x89PNG\r\n\x1a\n broken"}, ModelInputError, "image"),
        ({"data": b"1,2,3\n4,5,6\n", "args": {"format": "csv"}}, ModelInputError, "64"),
        ({"version": 99}, ModelNotFoundError, "no version 99"),
        ({"model": "no-such-model"}, ModelNotFoundError, "no module 'no-such-model'"),
    ],
)
async def test_bad_inference_input_is_a_clear_error_and_stops_nothing(
    env: tuple[Bus, LocalStorage], module: str, inp: dict[str, Any], error: type, message: str
) -> None:
    data = digits()
    body = {"model": module, "data": png(data.x[0]), **inp}
    with pytest.raises(error, match=message):
        await infer(InferenceInput.model_validate(body), ctx(env, "inference"))
    ok = await infer(InferenceInput(model=module, data=png(data.x[0])), ctx(env, "inference"))
    assert ok.result["predictions"][0]["label"] == data.y[0]


async def test_bad_training_data_is_a_clear_error(
    env: tuple[Bus, LocalStorage], module: str
) -> None:
    data = digits()
    no_label = csv_bytes(data.x)  # no label column
    with pytest.raises(ModelInputError, match="label"):
        await retrain(RetrainInput(model=module, data=no_label), ctx(env, "retrain"))
    _, storage = env
    await storage.create_bucket("train-two")
    info = await storage.put("train-two", "x/picture.png", png(data.x[0]))
    with pytest.raises(ModelInputError, match="_READY"):
        await retrain(
            RetrainInput.model_validate(
                {"model": module, "object": {"bucket": "train-two", "key": info.key}}
            ),
            ctx(env, "retrain"),
        )
    assert (await CatalogStore(*env).get_module(module)).latest == 1  # nothing was added
