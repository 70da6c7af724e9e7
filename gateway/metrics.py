"""Prometheus metrics: finished activations as counted where they finish (`runtimes.tally`),
invocations as accepted here, queue depths and the bus's disk use as read when scraped.

Series are labelled by function (and trigger), whose names belong to namespaces. `render` shows
a namespace only its own labelled series; without a namespace (an anonymous scrape) it sums
every series over its `function` and `trigger` labels, so no name of any namespace shows.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterator
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from eventbus.bodies import subscribe_bodies
from eventbus.connection import Bus
from eventbus.namespaces import namespace_of
from eventbus.streams import queue_depth
from eventbus.subjects import CONTROL_METRICS, events_subject
from gateway.bus_usage import BusUsage
from runtimes.tally import BUCKETS, CompletionTally, FunctionTally, Histogram, read_tally

log = logging.getLogger(__name__)
#: labels that carry a namespace's object names
NAMED: tuple[str, ...] = ("function", "trigger")


class Metrics:
    """The gateway's metric families (one registry per app, so tests do not share counters)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        #: activations this process finished (a sequence's end), counted as the others'
        self.finished = CompletionTally()
        self._finished = _Finished(self.finished)
        self.registry.register(self._finished)
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
        """Follow the tallies of finished activations (`runtimes.tally`, ``control.metrics``)
        and `trigger.skipped` events (plain subscriptions).

        In a queue group: with several gateways each message is counted by one of them, so
        their counters add up (sum every gateway's /metrics) instead of each counting
        everything. Only the bodies are read (`eventbus.bodies`).
        """
        queue = "gateway-metrics"
        self._subs = [
            await subscribe_bodies(bus.nc, CONTROL_METRICS, self._on_tally, queue=queue),
            await subscribe_bodies(
                bus.nc, events_subject("trigger.skipped"), self._on_skipped, queue=queue
            ),
        ]
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

    def _on_tally(self, body: bytes) -> None:
        tally = read_tally(body)
        if tally is not None:
            self._finished.add(tally.functions)

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


class _Finished:
    """The families of finished activations: every tally received, and this process's own."""

    def __init__(self, own: CompletionTally) -> None:
        self.own = own
        self.totals: dict[str, FunctionTally] = {}

    def add(self, functions: dict[str, FunctionTally]) -> None:
        """Add counts this collector may keep (a tally just read, or taken)."""
        for name, counts in functions.items():
            total = self.totals.get(name)
            if total is None:
                self.totals[name] = counts
            else:
                total.add(counts)

    def collect(self) -> Iterator[Metric]:
        self.add(self.own.take_counts())
        invocations = CounterMetricFamily(
            "deepfaas_invocations",
            "Completed activations by function and final status",
            labels=["function", "status"],
        )
        cold_starts = CounterMetricFamily(
            "deepfaas_cold_starts", "Activations that ran on a fresh worker", labels=["function"]
        )
        histograms = {
            "duration": HistogramMetricFamily(
                "deepfaas_activation_duration_seconds",
                "Run time of activations",
                labels=["function"],
            ),
            "wait": HistogramMetricFamily(
                "deepfaas_activation_wait_seconds",
                "Time from acceptance to start",
                labels=["function"],
            ),
            "init": HistogramMetricFamily(
                "deepfaas_cold_start_init_seconds",
                "Worker start-up time on cold starts",
                labels=["function"],
            ),
        }
        for name, counts in sorted(self.totals.items()):
            for status, n in sorted(counts.statuses.items()):
                invocations.add_metric([name, status], n)
            if counts.cold_starts:
                cold_starts.add_metric([name], counts.cold_starts)
            for attribute, family in histograms.items():
                histogram: Histogram = getattr(counts, attribute)
                if histogram.count:
                    family.add_metric([name], _cumulative(histogram), histogram.total)
        yield invocations
        yield from histograms.values()
        yield cold_starts


def _cumulative(histogram: Histogram) -> list[tuple[str, float]]:
    """Prometheus's buckets: each counts every observation up to its bound."""
    bounds = [*(repr(float(b)) for b in BUCKETS), "+Inf"]
    return list(zip(bounds, itertools.accumulate(histogram.counts), strict=True))


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
