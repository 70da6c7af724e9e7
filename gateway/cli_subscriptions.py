"""`deepfaas sub`: register, list, inspect and delete event subscriptions (webhook, NATS)."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from gateway.cli_common import DEFAULT_URL, JSON, URL, console, parse_filters
from gateway.cli_common import check as _check
from gateway.cli_common import client as _client
from gateway.cli_common import emit as _emit

sub_app = typer.Typer(
    help="Event subscriptions: deliver matching events to a webhook or a NATS subject.",
    no_args_is_help=True,
)


@sub_app.command("create")
def sub_create(
    sink: Annotated[str, typer.Option("--sink", help="http(s)://… webhook, or nats:<subject>")],
    types: Annotated[
        list[str] | None, typer.Option("--type", "-t", help="event type (repeatable)")
    ] = None,
    filters: Annotated[
        list[str] | None,
        typer.Option(
            "--filter", help='JSON filter, e.g. \'{"prefix": {"subject": "inbox/"}}\' (repeatable)'
        ),
    ] = None,
    source: Annotated[str | None, typer.Option(help="only events from this source")] = None,
    sub_id: Annotated[str | None, typer.Option("--id", help="choose the id")] = None,
    max_tries: Annotated[int | None, typer.Option(help="tries before a dead letter")] = None,
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="extra HTTP header NAME=VALUE")
    ] = None,
    url: URL = DEFAULT_URL,
    as_json: JSON = False,
) -> None:
    """Subscribe a sink to the events that match."""
    body: dict[str, Any] = {
        "sink": sink,
        "types": types or [],
        "filters": parse_filters(filters or []),
    }
    if source:
        body["source"] = source
    if sub_id:
        body["id"] = sub_id
    if max_tries is not None:
        body["config"] = {"max_tries": max_tries}
    if header:
        pairs = [h.partition("=") for h in header]
        if any(not sep or not name for name, sep, _ in pairs):
            raise typer.BadParameter("--header takes NAME=VALUE")
        body["protocolsettings"] = {"headers": {name: value for name, _, value in pairs}}
    with _client(url) as client:
        created = _check(client.post("/v1/subscriptions", json=body))
    if as_json:
        _emit(created, True)
    else:
        console.print(f"[green]subscribed[/green] {created['id']} → {created['sink']}")


@sub_app.command("list")
def sub_list(url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """Every subscription with its delivery counts."""
    with _client(url) as client:
        subs = _check(client.get("/v1/subscriptions"))
    if as_json:
        _emit(subs, True)
        return
    table = Table("id", "sink", "types", "filters", "on", "delivered", "failed", "dead")
    for s in subs:
        d = s["delivery"]
        table.add_row(
            s["id"],
            s["sink"],
            ", ".join(s["types"]) or "*",
            orjson.dumps(s["filters"]).decode() if s["filters"] else "",
            "yes" if s["enabled"] else "paused",
            str(d["delivered"]),
            str(d["failed"]),
            str(d["dead_lettered"]),
        )
    console.print(table)


@sub_app.command("get")
def sub_get(sub_id: str, url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """One subscription and its delivery state."""
    with _client(url) as client:
        _emit(_check(client.get(f"/v1/subscriptions/{sub_id}")), as_json)


@sub_app.command("delete")
def sub_delete(sub_id: str, url: URL = DEFAULT_URL) -> None:
    """Delete a subscription (delivery stops)."""
    with _client(url) as client:
        _check(client.delete(f"/v1/subscriptions/{sub_id}"))
    console.print(f"deleted {sub_id}")
