"""What a warm inference worker keeps: loaded model versions, and a batcher for each.

A worker loads a version once (plug-in import, artifact read, checksum, `load`) and keeps it in
memory; which version serves a call is read from the catalog on every call, so a promotion is
seen by the very next invocation without a restart. While that read is on its way, the version
that served the same ask last starts predicting (`ModelServer.predict`): the read costs the call
no time unless it names another version. Inputs that arrive while a batch runs wait and go
together in the next one: one thread hop for the lot, and one model call when the plug-in has
`predict_batch`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from runtimes.catalog import CatalogStore, VersionState
from runtimes.catalog.plugins import LoadedModelPlugin, load_model_plugin
from runtimes.errors import ModelNotFoundError

log = logging.getLogger(__name__)
KEEP_VERSIONS = 4
MAX_BATCH = 32


@dataclass(frozen=True)
class Prediction:
    """One answer (or the error it raised) and the size of the batch it ran in."""

    result: dict[str, Any] | None
    error: BaseException | None
    batch: int


class Batcher:
    """Runs waiting predictions of one loaded version together, in one worker thread."""

    def __init__(self, plugin: LoadedModelPlugin, model: Any, max_batch: int = MAX_BATCH) -> None:
        self.plugin = plugin
        self.model = model
        self.max_batch = max_batch
        self._waiting: list[tuple[dict[str, Any], asyncio.Future[Prediction]]] = []
        self._draining: asyncio.Task[None] | None = None

    async def predict(self, args: dict[str, Any]) -> Prediction:
        """Queue one input; resolve when its batch has run."""
        future: asyncio.Future[Prediction] = asyncio.get_running_loop().create_future()
        self._waiting.append((args, future))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._waiting:
            # an input whose caller left (an early prediction dropped) is not predicted
            self._waiting = [(args, future) for args, future in self._waiting if not future.done()]
            if not self._waiting:
                break
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
            try:
                answers = await asyncio.to_thread(self._run, [args for args, _ in batch])
            except Exception as exc:  # the thread itself failed: every caller hears it
                answers = [Prediction(None, exc, len(batch))] * len(batch)
            except asyncio.CancelledError:  # the worker is stopping: nobody is left waiting
                for _, future in batch + self._waiting:
                    future.cancel()
                raise
            for (_, future), answer in zip(batch, answers, strict=True):
                if not future.done():
                    future.set_result(answer)

    def _run(self, batch: list[dict[str, Any]]) -> list[Prediction]:
        # one model call for the batch when the plug-in can; each input's own error if not
        return [
            Prediction(None, answer, len(batch))
            if isinstance(answer, BaseException)
            else Prediction(answer, None, len(batch))
            for answer in self.plugin.predict_many(self.model, batch)
        ]


class ModelServer:
    """Resolves the version to serve and keeps up to `KEEP_VERSIONS` of them loaded."""

    def __init__(self, catalog: CatalogStore) -> None:
        self.catalog = catalog
        self._plugins: dict[str, LoadedModelPlugin] = {}
        self._loaded: OrderedDict[tuple[str, int], Batcher] = OrderedDict()
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}
        #: the version that served each ask (model, pinned version or None) last
        self._served: dict[tuple[str, int | None], int] = {}

    async def predict(
        self, name: str, pinned: int | None, resolving: Awaitable[int], args: dict[str, Any]
    ) -> tuple[int, Prediction, bool]:
        """The version ``resolving`` names (`resolve` of the same ask), its prediction for
        ``args``, and whether this call loaded it.

        While ``resolving`` goes, the version that served this ask last, if still loaded,
        starts predicting: when the read names it again, as it nearly always does, its answer
        is this call's; when it names another (a promotion, a retirement), that answer is
        dropped and the version named predicts (an input not yet in a batch is not predicted at
        all). Plug-ins' predictions are expected to have no side effects."""
        ask = (name, pinned)
        guess = self._served.get(ask)
        ready = self._loaded.get((name, guess)) if guess is not None else None
        early = asyncio.ensure_future(ready.predict(args)) if ready is not None else None
        try:
            version = await resolving
        except BaseException:
            if early is not None:
                early.cancel()
            raise
        self._served[ask] = version
        if early is not None:
            if version == guess:
                if (name, guess) in self._loaded:  # in use: the last to be dropped
                    self._loaded.move_to_end((name, guess))
                return version, await early, False
            early.cancel()
        batcher, loaded = await self.batcher(name, version)
        return version, await batcher.predict(args), loaded

    async def resolve(self, name: str, pinned: int | None) -> int:
        """The pinned version (not retired), or the promoted one: one KV read when promoted."""
        if pinned is None:
            return await self.catalog.promoted_number(name)
        version = await self.catalog.stored_version(name, pinned)  # retired is never derived
        if version.state is VersionState.RETIRED:
            raise ModelNotFoundError(
                f"version {pinned} of {name!r} is retired: {version.reason or 'no reason given'}",
                model=name,
                version=pinned,
            )
        return pinned

    async def batcher(self, name: str, number: int) -> tuple[Batcher, bool]:
        """The loaded version (loading it on first use); True if this call loaded it."""
        key = (name, number)
        ready = self._loaded.get(key)
        if ready is not None:
            self._loaded.move_to_end(key)
            return ready, False
        async with self._locks.setdefault(key, asyncio.Lock()):
            ready = self._loaded.get(key)
            if ready is not None:
                return ready, False
            module = await self.catalog.get_module(name)
            version = await self.catalog.stored_version(name, number)
            plugin = await self._plugin(module.plugin_name)
            artifact = await self.catalog.read_artifact(version)
            model = await asyncio.to_thread(plugin.load, artifact)
            ready = Batcher(plugin, model)
            self._loaded[key] = ready
            while len(self._loaded) > KEEP_VERSIONS:
                dropped, _ = self._loaded.popitem(last=False)
                self._locks.pop(dropped, None)
            log.info("loaded %s v%d (%d bytes)", name, number, len(artifact))
            return ready, True

    async def _plugin(self, name: str) -> LoadedModelPlugin:
        plugin = self._plugins.get(name)
        if plugin is None:
            plugin = await asyncio.to_thread(load_model_plugin, name)
            self._plugins[name] = plugin
        return plugin
