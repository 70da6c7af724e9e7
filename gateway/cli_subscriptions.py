"""`deepfaas sub`: register, list, inspect and delete event subscriptions (webhook, NATS)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.console import Console
from rich.table import Table

sub_app = typer.Typer(
    help="Event subscriptions: deliver matching events to a webhook or a NATS subject.",
    no_args_is_help=True,
)

console = Console()
err = Console(stderr=True)
URL = Annotated[str, typer.Option("--url", envvar="DEEPFAAS_URL", help="gateway URL")]
JSON = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]
DEFAULT_URL = "http://127.0.0.1:8080"


def _client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=30.0)


def _check(response: httpx.Response) -> Any:
    """The JSON body, or exit 1 with the problem's detail."""
    if response.is_error:
        try:
            detail = response.json().get("detail") or response.text
        except ValueError:
            detail = response.text
        err.print(f"[red]error {response.status_code}[/red]: {detail}")
        raise typer.Exit(1)
    return response.json() if response.content else None


def _emit(value: Any, as_json: bool) -> None:
    if as_json or not isinstance(value, dict | list):
        sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        console.print_json(orjson.dumps(value).decode())


def _filters(texts: list[str]) -> list[Any]:
    """Each --filter is a JSON filter object or list (or @file); together an implicit `all`."""
    found: list[Any] = []
    for text in texts:
        raw = Path(text[1:]).read_bytes() if text.startswith("@") else text.encode()
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise typer.BadParameter(f"--filter is not JSON: {exc}") from exc
        found.extend(value if isinstance(value, list) else [value])
    return found


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
    body: dict[str, Any] = {"sink": sink, "types": types or [], "filters": _filters(filters or [])}
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
