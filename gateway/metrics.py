"""Prometheus metrics, fed by the activation events every worker publishes."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import orjson
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from eventbus.connection import Bus
from eventbus.streams import queue_depth

log = logging.getLogger(__name__)
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    """The gateway's metric families (one registry per app, so tests do not share counters)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.invocations = Counter(
            "deepfaas_invocations",
            "Completed activations by function and final status",
            ["function", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "deepfaas_activation_duration_seconds",
            "Run time of activations",
            ["function"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.wait = Histogram(
            "deepfaas_activation_wait_seconds",
            "Time from acceptance to start",
            ["function"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.cold_starts = Counter(
            "deepfaas_cold_starts",
            "Activations that ran on a fresh worker",
            ["function"],
            registry=self.registry,
        )
        self.init_time = Histogram(
            "deepfaas_cold_start_init_seconds",
            "Worker start-up time on cold starts",
            ["function"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.accepted = Counter(
            "deepfaas_invocations_accepted",
            "Invocations accepted by the gateway, by mode",
            ["function", "mode"],
            registry=self.registry,
        )
        self.queue_waiting = Gauge(
            "deepfaas_queue_waiting",
            "Invocations waiting in a function's queue",
            ["function"],
            registry=self.registry,
        )
        self.queue_in_flight = Gauge(
            "deepfaas_queue_in_flight",
            "Invocations delivered but not yet acknowledged",
            ["function"],
            registry=self.registry,
        )
        self.skipped = Counter(
            "deepfaas_trigger_skipped",
            "Trigger matches that invoked nothing (disabled trigger, missing function, loop)",
            ["trigger", "function", "reason"],
            registry=self.registry,
        )
        self._sub: Any = None
        self._skip_sub: Any = None

    async def start(self, bus: Bus) -> None:
        """Follow `events.activation.*` (a plain subscription: it sees what JetStream stores)."""
        self._sub = await bus.nc.subscribe("events.activation.*", cb=self._on_event)
        self._skip_sub = await bus.nc.subscribe("events.trigger.skipped", cb=self._on_skipped)

    async def stop(self) -> None:
        """Stop following events."""
        for sub in (self._sub, self._skip_sub):
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def _on_skipped(self, msg: Msg) -> None:
        try:
            data = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            return
        if isinstance(data, dict):
            self.skipped.labels(
                str(data.get("trigger", "")),
                str(data.get("function", "")),
                str(data.get("reason", "")),
            ).inc()

    async def _on_event(self, msg: Msg) -> None:
        try:
            data = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(data, dict) or "function" not in data:
            return
        fn = str(data["function"])
        self.invocations.labels(fn, str(data.get("status", "unknown"))).inc()
        if isinstance(data.get("duration_ms"), int | float):
            self.duration.labels(fn).observe(data["duration_ms"] / 1000)
        if isinstance(data.get("wait_ms"), int | float):
            self.wait.labels(fn).observe(max(0.0, data["wait_ms"] / 1000))
        if data.get("cold_start"):
            self.cold_starts.labels(fn).inc()
            if isinstance(data.get("init_ms"), int | float):
                self.init_time.labels(fn).observe(data["init_ms"] / 1000)

    async def render(self, bus: Bus, functions: list[str]) -> bytes:
        """The exposition text, with queue depths read now."""
        for fn in functions:
            with contextlib.suppress(Exception):
                waiting, in_flight = await queue_depth(bus.js, fn)
                self.queue_waiting.labels(fn).set(waiting)
                self.queue_in_flight.labels(fn).set(in_flight)
        return bytes(generate_latest(self.registry))
