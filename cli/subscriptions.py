"""`deepfaas sub`: register, list, inspect and delete event subscriptions (webhook, NATS)."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import typer

from cli.common import (
    DEFAULT_URL,
    JSON,
    URL,
    call,
    delete,
    parse_filters,
    parse_pairs,
    say,
    show,
    table,
)

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
        body["protocolsettings"] = {"headers": parse_pairs(header, "--header", key="NAME")}
    created = call(url, "POST", "/v1/subscriptions", json=body)
    say(created, as_json, f"[green]subscribed[/green] {created['id']} → {created['sink']}")


@sub_app.command("list")
def sub_list(url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """Every subscription with its delivery counts."""
    table(
        call(url, "GET", "/v1/subscriptions"),
        as_json,
        ("id", "sink", "types", "filters", "on", "delivered", "failed", "dead"),
        lambda s: (
            s["id"],
            s["sink"],
            ", ".join(s["types"]) or "*",
            orjson.dumps(s["filters"]).decode() if s["filters"] else "",
            "yes" if s["enabled"] else "paused",
            str(s["delivery"]["delivered"]),
            str(s["delivery"]["failed"]),
            str(s["delivery"]["dead_lettered"]),
        ),
    )


@sub_app.command("get")
def sub_get(sub_id: str, url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """One subscription and its delivery state."""
    show(url, f"/v1/subscriptions/{sub_id}", as_json)


@sub_app.command("delete")
def sub_delete(sub_id: str, url: URL = DEFAULT_URL) -> None:
    """Delete a subscription (delivery stops)."""
    delete(url, f"/v1/subscriptions/{sub_id}", f"deleted {sub_id}")
