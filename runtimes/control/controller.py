"""The control loop: keeps each function's workers between min and max scale, by demand.

It watches the `functions` KV bucket, provisions a runtime per function version through the
local provider, rolls workers on an update (new version ready before the old is released),
scales with queue depth and in-flight work, and releases idle workers down to ``min_scale``.
A GPU runtime with no GPU free stays pending (its status says why) and its invocations fail
after ``gpu_wait_s`` (`runtimes.control.pending`). ``control.runtimes`` answers each runtime's
state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from nats.aio.msg import Msg

from eventbus.connection import Bus
from eventbus.streams import FUNCTIONS_KV, ensure_consumer, queue_depth
from eventbus.subjects import CONTROL_RUNTIMES, CONTROL_STEM, control_subject, function_of
from runtimes.control.pending import PendingInvocations
from runtimes.placement.sites import SitesFile
from runtimes.providers.base import Provider, WorkerHost
from runtimes.providers.local import parse_announcement
from runtimes.providers.registry import ProviderRegistry
from runtimes.settings import ControllerSettings
from runtimes.types import FunctionSpec, GpuRequest, RuntimeHandle, RuntimeSpec

log = logging.getLogger(__name__)
HEARTBEAT_FRESH_S = 3.0
ROLLOUT_TIMEOUT_S = 120.0


@dataclass
class _Managed:
    spec: FunctionSpec
    handle: RuntimeHandle
    last_active: float = field(default_factory=time.time)
    retiring: list[RuntimeHandle] = field(default_factory=list)
    rollout: asyncio.Task[None] | None = None
    pending_since: float | None = None


def runtime_spec(spec: FunctionSpec) -> RuntimeSpec:
    """The runtime a function version needs."""
    return RuntimeSpec(
        name=f"{spec.name}-v{spec.version}",
        function=spec.name,
        function_version=spec.version,
        module=spec.handler,
        cpu=spec.cpu,
        memory_mb=spec.memory_mb,
        gpu=GpuRequest(count=spec.gpu, model=spec.gpu_model),
        env=spec.env,
        min_scale=spec.min_scale,
        max_scale=spec.max_scale,
        concurrency=spec.concurrency,
    )


class Controller:
    """Scales every registered function's workers through a `Provider` (this machine's)."""

    def __init__(
        self,
        bus: Bus,
        provider: Provider,
        settings: ControllerSettings,
        registry: ProviderRegistry | None = None,
    ) -> None:
        self.bus = bus
        self.provider = provider
        self.settings = settings
        # every provider of this process (the deployments' too): workers' announcements go
        # to all of them, and all are closed on stop
        self.registry = registry or ProviderRegistry(SitesFile.model_construct(sites=()))
        self.registry.add(provider.site, provider)
        self.functions: dict[str, _Managed] = {}
        self.heartbeats: dict[str, dict[str, tuple[float, dict[str, Any]]]] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        # workers of removed functions draining in the background, by function name
        self._releasing: dict[str, asyncio.Task[None]] = {}
        self._subs: list[Any] = []
        self._synced = asyncio.Event()
        self.pending = PendingInvocations(bus, settings.gpu_wait_s)

    async def start(self) -> None:
        """Subscribe to worker announcements and start watching specs and demand."""
        nc = self.bus.nc
        self._subs = [
            await nc.subscribe(control_subject("ready"), cb=self._on_ready),
            await nc.subscribe(control_subject("heartbeat"), cb=self._on_heartbeat),
            await nc.subscribe(control_subject("wake"), cb=self._on_wake),
            await nc.subscribe(control_subject("instances"), cb=self._on_instances),
            await nc.subscribe(CONTROL_STEM, cb=self._on_stem),
            await nc.subscribe(CONTROL_RUNTIMES, cb=self._on_runtimes),
        ]
        if isinstance(self.provider, WorkerHost):
            await self.provider.start()
        self._tasks = [
            asyncio.create_task(self._watch_specs(), name="watch-specs"),
            asyncio.create_task(self._reconcile_loop(), name="reconcile"),
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._synced.wait(), 10)

    async def stop(self) -> None:
        """Stop the loops and every worker."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*self._releasing.values(), return_exceptions=True)
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        await self.pending.close()
        await self.registry.close()

    # -- specs --------------------------------------------------------------------------------

    async def _watch_specs(self) -> None:
        kv = await self.bus.kv(FUNCTIONS_KV)
        while True:
            try:
                watcher = await kv.watchall()
                async for entry in watcher:
                    if entry is None:  # end of the initial values
                        self._synced.set()
                        continue
                    try:
                        if entry.operation in ("DEL", "PURGE") or not entry.value:
                            await self._remove(entry.key)
                        else:
                            await self._apply(FunctionSpec.model_validate_json(entry.value))
                    except ValueError as exc:  # one bad spec must not stall every other one
                        log.error("function %s: spec not applied: %s", entry.key, exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # bus restarts end the watch: start it again
                log.warning("function watch ended (%s); watching again", exc)
                await asyncio.sleep(0.5)

    async def _apply(self, spec: FunctionSpec) -> None:
        await ensure_consumer(self.bus.js, spec.name, ack_wait=self.settings.ack_wait_s)
        managed = self.functions.get(spec.name)
        if managed is None:
            releasing = self._releasing.get(spec.name)
            if releasing is not None:  # re-created while its old workers drain: same runtime name
                await asyncio.gather(releasing, return_exceptions=True)
            handle = await self.provider.provision(runtime_spec(spec), pending_ok=True)
            managed = self.functions[spec.name] = _Managed(spec=spec, handle=handle)
            log.info("function %s v%d registered", spec.name, spec.version)
            # Its first invocation may be queued already, its wake sent before this controller
            # knew the function (a PUT then an invoke): scale now, not at the next reconcile.
            await self._reconcile_once(managed)
            return
        if spec.version == managed.spec.version:
            return
        old, old_spec = managed.handle, managed.spec
        replicas = max((await self.provider.status(old)).desired, spec.min_scale)
        handle = await self.provider.provision(runtime_spec(spec), pending_ok=True)
        await self.provider.scale(handle, replicas)
        managed.spec, managed.handle = spec, handle
        managed.retiring.append(old)
        log.info("function %s: rolling v%d -> v%d", spec.name, old_spec.version, spec.version)
        managed.rollout = asyncio.create_task(self._retire(managed, old, handle, replicas))

    async def _retire(
        self, managed: _Managed, old: RuntimeHandle, new: RuntimeHandle, replicas: int
    ) -> None:
        """Release the old runtime once the new one is ready (rolling update).

        When the new one is pending (no GPU free, or no room in the worker budget) while the old
        one has workers, there is no room to surge: the old one goes first (its in-flight work
        drains) and invocations queue meanwhile.
        """
        deadline = time.monotonic() + ROLLOUT_TIMEOUT_S
        while replicas and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                status = await self.provider.status(new)
                if status.ready >= max(1, min(replicas, status.desired)):
                    break
                if status.pending and (await self.provider.status(old)).workers:
                    break
            await asyncio.sleep(0.05)
        await self.provider.release(old)
        with contextlib.suppress(ValueError):
            managed.retiring.remove(old)

    async def _remove(self, name: str) -> None:
        managed = self.functions.pop(name, None)
        if managed is None:
            return
        await self.pending.forget(name)
        log.info("function %s removed; its workers drain", name)
        # Draining takes up to the workers' grace period: in the background, so that the spec
        # watch goes on registering and updating every other function meanwhile.
        task = asyncio.create_task(self._release(name, managed), name=f"release-{name}")
        self._releasing[name] = task

    async def _release(self, name: str, managed: _Managed) -> None:
        try:
            for handle in [managed.handle, *managed.retiring]:
                await self.provider.release(handle)
        except Exception as exc:  # a background task: nobody else would log it
            log.warning("function %s: releasing its workers failed: %s", name, exc)
        finally:
            if self._releasing.get(name) is asyncio.current_task():
                del self._releasing[name]

    # -- demand -------------------------------------------------------------------------------

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reconcile_s)
            for managed in list(self.functions.values()):
                await self._reconcile_once(managed)

    async def _reconcile_once(self, managed: _Managed) -> None:
        try:
            await self._reconcile(managed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("reconcile %s: %s", managed.spec.name, exc)

    async def _reconcile(self, managed: _Managed) -> None:
        spec = managed.spec
        waiting, in_flight = await queue_depth(self.bus.js, spec.name)
        demand = waiting + max(in_flight, self._sync_inflight(spec.name))
        now = time.time()
        if demand > 0:
            managed.last_active = now
        desired = min(spec.max_scale, max(spec.min_scale, math.ceil(demand / spec.concurrency)))
        current = (await self.provider.status(managed.handle)).desired
        if desired > current:
            log.info("%s: scaling %d -> %d (demand %d)", spec.name, current, desired, demand)
            await self.provider.scale(managed.handle, desired)
        elif desired < current and now - managed.last_active >= self.settings.idle_release_s:
            log.info("%s: idle, scaling %d -> %d", spec.name, current, desired)
            await self.provider.scale(managed.handle, desired)
        await self._check_pending(managed)

    async def _check_pending(self, managed: _Managed) -> None:
        """While no worker can start for want of a GPU, fail invocations past the bounded wait."""
        state = await self.provider.status(managed.handle)
        if not state.pending or state.ready or managed.retiring:
            if managed.pending_since is not None:
                managed.pending_since = None
                await self.pending.forget(managed.spec.name)
            return
        if managed.pending_since is None:
            managed.pending_since = time.time()
            log.warning("%s: pending: %s", managed.spec.name, state.pending)
        await self.pending.expire(managed.spec, state.pending)

    def _sync_inflight(self, function: str) -> int:
        now = time.time()
        beats = self.heartbeats.get(function, {})
        return sum(
            int(body.get("inflight", 0))
            for seen, body in beats.values()
            if now - seen < HEARTBEAT_FRESH_S
        )

    # -- announcements ------------------------------------------------------------------------

    async def _on_ready(self, msg: Msg) -> None:
        body = parse_announcement(msg.data)
        self.registry.mark_ready(int(body.get("pid", 0)))
        self._beat(body)

    async def _on_stem(self, msg: Msg) -> None:
        self.registry.mark_ready(int(parse_announcement(msg.data).get("pid", 0)))

    async def _on_heartbeat(self, msg: Msg) -> None:
        self._beat(parse_announcement(msg.data))

    def _beat(self, body: dict[str, Any]) -> None:
        function, worker = str(body.get("function", "")), str(body.get("worker", ""))
        beats = self.heartbeats.setdefault(function, {})
        beats[worker] = (time.time(), body)
        if int(body.get("inflight", 0)) and function in self.functions:
            self.functions[function].last_active = time.time()
        for key in [k for k, (seen, _) in beats.items() if time.time() - seen > 30]:
            del beats[key]

    async def _on_wake(self, msg: Msg) -> None:
        name = function_of(msg.subject)
        managed = self.functions.get(name)
        if managed is not None and (await self.provider.status(managed.handle)).desired == 0:
            managed.last_active = time.time()
            await self.provider.scale(managed.handle, 1)

    async def _on_instances(self, msg: Msg) -> None:
        name = function_of(msg.subject)
        managed = self.functions.get(name)
        if managed is None or not msg.reply:
            if msg.reply:
                await msg.respond(b"[]")
            return
        beats = self.heartbeats.get(name, {})
        by_pid = {int(b.get("pid", 0)): b for _, b in beats.values()}
        items: list[dict[str, Any]] = []
        host = self.provider
        if isinstance(host, WorkerHost):  # workers this controller hears from
            for handle in [managed.handle, *managed.retiring]:
                for inst in host.instances(handle):
                    beat = by_pid.get(inst["pid"], {})
                    items.append({**inst, "inflight": beat.get("inflight", 0), "site": handle.site})
        await msg.respond(orjson.dumps(items))

    async def _on_runtimes(self, msg: Msg) -> None:
        """Answer each function's runtime state (or one function's, named in the body)."""
        if not msg.reply:
            return
        only = msg.data.decode(errors="replace").strip()
        blocks = [
            await self.runtime_state(managed)
            for name, managed in sorted(self.functions.items())
            if not only or name == only
        ]
        body: dict[str, Any] = {"runtimes": blocks}
        prewarmed = self.provider.prewarmed() if isinstance(self.provider, WorkerHost) else None
        if prewarmed is not None:
            body["prewarmed"] = prewarmed
        await msg.respond(orjson.dumps(body))

    async def runtime_state(self, managed: _Managed) -> dict[str, Any]:
        """One function's runtime: replicas, status and the reason when not ready."""
        spec, state = managed.spec, await self.provider.status(managed.handle)
        if state.pending and not state.ready:
            status, reason = "pending", state.pending
        elif state.desired == 0 and state.workers == 0:
            status, reason = "idle", "scaled to zero"
        elif state.ready >= state.desired and not managed.retiring:
            status, reason = "ready", ""
        else:
            status = "scaling"
            reason = state.message or ("rolling update" if managed.retiring else "workers starting")
        since = managed.pending_since
        return {
            "function": spec.name,
            "version": spec.version,
            "site": managed.handle.site,
            "status": status,
            "reason": reason,
            "desired": state.desired,
            "workers": state.workers,
            "ready": state.ready,
            "min_scale": spec.min_scale,
            "max_scale": spec.max_scale,
            "gpus": state.gpus,
            "pending_since": since,
            "retiring": len(managed.retiring),
        }
