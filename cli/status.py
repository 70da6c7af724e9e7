"""`deepfaas status`: is the platform ready, and how full is the bus against its disk budget."""

from __future__ import annotations

from typing import Any

import httpx
import typer
from prometheus_client.parser import text_string_to_metric_families
from rich.table import Table

from cli.common import DEFAULT_URL, JSON, URL, client, console, emit, err

#: a stream this full is shown in yellow (the gateway logs a warning from here on)
WARN_AT = 0.8


def status(url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """Readiness, and every stream and KV bucket's bytes against its budget."""
    with client(url, timeout=15) as c:
        try:
            ready = c.get("/readyz")
            metrics = c.get("/metrics")
        except httpx.HTTPError as exc:
            err.print(f"[red]the gateway at {url} did not answer[/red]: {exc}")
            raise typer.Exit(1) from None
    report = {"ready": ready.json(), "streams": streams(metrics.text)}
    if as_json:
        emit(report, True)
    else:
        show(report)
    if ready.status_code != 200:
        raise typer.Exit(1)


def streams(exposition: str) -> list[dict[str, Any]]:
    """Bytes, messages and budget per stream, from the gateway's /metrics."""
    found: dict[str, dict[str, Any]] = {}
    names = {
        "deepfaas_bus_stream_bytes": "bytes",
        "deepfaas_bus_stream_budget_bytes": "budget",
        "deepfaas_bus_stream_messages": "messages",
    }
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            field = names.get(sample.name)
            if field is not None:
                row = found.setdefault(sample.labels["stream"], {"stream": sample.labels["stream"]})
                row[field] = int(sample.value)
    for row in found.values():
        budget = row.get("budget", -1)
        row["budget"] = budget if budget > 0 else None
        row["used"] = round(row.get("bytes", 0) / budget, 4) if budget > 0 else None
    return sorted(found.values(), key=lambda r: r["stream"])


def show(report: dict[str, Any]) -> None:
    """The report as a line and a table."""
    ready = report["ready"]
    state = "[green]ready[/green]" if ready.get("status") == "ok" else "[red]not ready[/red]"
    console.print(f"platform {state}: nats {ready.get('nats')}, jetstream {ready.get('jetstream')}")
    table = Table("stream", "bytes", "budget", "used", "messages")
    for row in report["streams"]:
        used = row["used"]
        shown = "-" if used is None else f"{used:.0%}"
        if used is not None and used >= WARN_AT:
            shown = f"[yellow]{shown}[/yellow]"
        budget = "none" if row["budget"] is None else _size(row["budget"])
        table.add_row(
            row["stream"], _size(row.get("bytes", 0)), budget, shown, str(row.get("messages", 0))
        )
    console.print(table)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
