"""Prometheus metrics, fed by the activation events every worker publishes.

Series are labelled by function (and trigger), whose names belong to namespaces. `render` shows
a namespace only its own labelled series; without a namespace (an anonymous scrape) it sums
every series over its `function` and `trigger` labels, so no name of any namespace shows.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from eventbus.bodies import subscribe_bodies
from eventbus.connection import Bus
from eventbus.namespaces import namespace_of
from eventbus.streams import queue_depth
from eventbus.subjects import activation_subject, events_subject, legacy_activation_subject
from gateway.bus_usage import BusUsage

log = logging.getLogger(__name__)
#: labels that carry a namespace's object names
NAMED: tuple[str, ...] = ("function", "trigger")
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
        self._subs: list[Any] = []
        #: the bus's streams against their disk budgets (and a warning near the limit)
        self.bus_usage = BusUsage(self.registry)

    async def start(self, bus: Bus) -> None:
        """Follow `activation.*` and `trigger.skipped` (plain subscriptions: they see what
        JetStream stores).

        In a queue group: with several gateways each event is counted by one of them, so their
        counters add up (sum every gateway's /metrics) instead of each counting everything.
        Only the bodies are read (`eventbus.bodies`): every figure is in the event's data, and
        decoding the headers of every completion cost this process more than counting it.
        """
        queue = "gateway-metrics"
        self._subs = [
            # and where a process of the previous version publishes them (an upgrade)
            await subscribe_bodies(bus.nc, subject, self._on_event, queue=queue)
            for subject in (activation_subject(), legacy_activation_subject())
        ]
        self._subs.append(
            await subscribe_bodies(
                bus.nc, events_subject("trigger.skipped"), self._on_skipped, queue=queue
            )
        )
        self.bus_usage.start(bus)

    async def stop(self) -> None:
        """Stop following events."""
        await self.bus_usage.stop()
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs = []

    def _on_skipped(self, body: bytes) -> None:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        if isinstance(data, dict):
            self.skipped.labels(
                str(data.get("trigger", "")),
                str(data.get("function", "")),
                str(data.get("reason", "")),
            ).inc()

    def _on_event(self, body: bytes) -> None:
        try:
            data = orjson.loads(body)
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

    async def render(self, bus: Bus, functions: list[str], namespace: str | None) -> bytes:
        """The exposition text, with queue depths read now: ``namespace``'s own series, or
        (``None``) aggregates with no function or trigger names."""
        for fn in functions:
            if namespace is not None and namespace_of(fn) != namespace:
                continue
            with contextlib.suppress(Exception):
                waiting, in_flight = await queue_depth(bus.js, fn)
                self.queue_waiting.labels(fn).set(waiting)
                self.queue_in_flight.labels(fn).set(in_flight)
        with contextlib.suppress(Exception):  # the bus away: the last figures stay
            await self.bus_usage.refresh(bus)
        view: Collector = (
            _Aggregate(self.registry) if namespace is None else _Own(self.registry, namespace)
        )
        return bytes(generate_latest(view))


class _Own:
    """The series whose function and trigger labels all belong to one namespace."""

    def __init__(self, registry: CollectorRegistry, namespace: str) -> None:
        self.registry = registry
        self.namespace = namespace

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            kept = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                named = [sample.labels[k] for k in NAMED if k in sample.labels]
                if all(namespace_of(value) == self.namespace for value in named if value):
                    kept.samples.append(sample)
            yield kept


class _Aggregate:
    """Every series summed over its function and trigger labels (`_created` stamps dropped)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            sums: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k not in NAMED))
                key = (sample.name, labels)
                sums[key] = sums.get(key, 0.0) + sample.value
            summed = Metric(family.name, family.documentation, family.type, family.unit)
            for (name, labels), value in sums.items():
                summed.add_sample(name, dict(labels), value)
            yield summed
