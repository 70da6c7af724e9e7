"""Dead letters (each namespace's own), the operator's pages (runtimes, deployments) and the
invocation rate charts."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from fastapi import APIRouter, Request, Response

from eventbus.dlq import DeadLetter, list_dead_letters
from eventbus.namespaces import local_name
from gateway.auth.access import namespace, qualified
from gateway.console.render import FRAGMENTS, FragmentRoute, fragment, operator_only
from gateway.params import FunctionFilter, StreamSeq
from gateway.routes import deployments as deployments_api
from gateway.routes import functions as functions_api
from gateway.routes import ops as ops_api
from gateway.routes import runtimes as runtimes_api
from gateway.state import state_of
from runtimes.types import ActivationRecord, ActivationStatus

router = APIRouter(prefix=FRAGMENTS, route_class=FragmentRoute, include_in_schema=False)
#: records read for the rate charts, at most (the newest; older ones fall outside the hour)
RATE_SCAN: Final = 5000


async def _letters(request: Request) -> list[DeadLetter]:
    bus = state_of(request).bus
    return await list_dead_letters(bus, limit=100, namespace=ops_api.visible_to(request))


@router.get("/dlq")
async def list_dlq(request: Request) -> Response:
    """The namespace's dead letters, newest first (the default namespace sees all)."""
    letters = await _letters(request)
    return fragment(request, "dlq_list.html", letters=letters)


@router.post("/dlq/{seq}/replay")
async def replay(request: Request, seq: StreamSeq) -> Response:
    """Queue the letter's invocation again as a new activation; the letter goes."""
    accepted = await ops_api.replay_dlq(request, seq)
    letters = await _letters(request)
    return fragment(
        request, "dlq_list.html", letters=letters, replayed=(seq, accepted.activation_id)
    )


@router.get("/runtimes")
async def runtimes(request: Request) -> Response:
    """Where each function runs (site, workers, GPUs, state, why pending) and deployments."""
    operator_only(request, "/v1/runtimes")
    found = await runtimes_api.list_runtimes(request)
    deployments = await deployments_api.list_deployments(request)
    return fragment(request, "runtimes.html", runtimes=found, deployments=deployments)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _summary(records: list[ActivationRecord]) -> dict[str, Any]:
    runs = [r.duration_ms for r in records if r.duration_ms is not None]
    failed = sum(1 for r in records if r.status is not ActivationStatus.SUCCESS)
    return {
        "count": len(records),
        "failed": failed,
        **{f"p{q}": _percentile(runs, q / 100) if runs else None for q in (50, 95, 99)},
    }


@router.get("/rates")
async def rates(request: Request, function: FunctionFilter = None) -> Response:
    """Invocations per minute and run-time percentiles (p50, p95, p99) over the last hour,
    from the platform's activation records; per function, or of all the namespace's."""
    ns = namespace(request)
    now = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    start = now - timedelta(hours=1)
    records = await state_of(request).activations.recent(
        limit=RATE_SCAN,
        scan=RATE_SCAN,
        where=lambda r: r.namespace == ns and r.start >= start,
    )
    by_function: dict[str, list[ActivationRecord]] = defaultdict(list)
    for record in records:
        by_function[local_name(record.function)].append(record)
    chosen = by_function.get(local_name(qualified(request, function)), []) if function else records
    minutes: dict[int, list[ActivationRecord]] = defaultdict(list)
    for record in chosen:
        minutes[int((record.start - start).total_seconds() // 60)].append(record)
    x = [int((start + timedelta(minutes=m)).timestamp()) for m in range(60)]
    runs = [[r.duration_ms for r in minutes[m] if r.duration_ms is not None] for m in range(60)]
    rate_chart = {
        "time": True,
        "x": x,
        "ylabel": "invocations / min",
        "series": [{"label": "invocations", "values": [len(minutes[m]) for m in range(60)]}],
    }
    latency_chart = {
        "time": True,
        "x": x,
        "ylabel": "run time, ms",
        "series": [
            {"label": f"p{q}", "values": [_percentile(v, q / 100) if v else None for v in runs]}
            for q in (50, 95, 99)
        ],
    }
    names = [f.name for f in await functions_api.list_functions(request)]
    return fragment(
        request,
        "rates.html",
        function=function,
        names=names,
        rate_chart=rate_chart,
        latency_chart=latency_chart,
        table={name: _summary(found) for name, found in sorted(by_function.items())},
    )
