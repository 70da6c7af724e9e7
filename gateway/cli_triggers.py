"""`deepfaas trigger`: bind event filters to functions from the command line."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from gateway.cli_common import DEFAULT_URL, JSON, URL, console, parse_filters
from gateway.cli_common import check as _check
from gateway.cli_common import client as _client
from gateway.cli_common import emit as _emit

trigger_app = typer.Typer(
    help="Triggers: run a function when a matching event arrives.", no_args_is_help=True
)


def _parse_params(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs; a value that parses as JSON is taken as JSON (numbers, true, lists)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--param takes KEY=VALUE, not {pair!r}")
        try:
            params[key] = orjson.loads(value)
        except orjson.JSONDecodeError:
            params[key] = value
    return params


@trigger_app.command("create")
def trigger_create(
    name: Annotated[str, typer.Argument(help="trigger name")],
    function: Annotated[str, typer.Option("--function", "-f", help="function to invoke")],
    bucket: Annotated[str | None, typer.Option(help="storage: only this bucket")] = None,
    prefix: Annotated[str | None, typer.Option(help="storage: object key prefix")] = None,
    suffix: Annotated[str | None, typer.Option(help="storage: object key suffix")] = None,
    event_type: Annotated[
        list[str] | None, typer.Option("--type", help="full event type (repeatable)")
    ] = None,
    filters: Annotated[
        list[str] | None,
        typer.Option("--filter", help='JSON filter, e.g. \'{"prefix": {"type": "io."}}\''),
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="static parameter KEY=VALUE")
    ] = None,
    output_bucket: Annotated[str | None, typer.Option(help="bucket for the result")] = None,
    output_key: Annotated[
        str | None, typer.Option(help="key template: {key} {stem} {ext} {bucket} {id} {trigger}")
    ] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="create it disabled")] = False,
    replace: Annotated[
        bool, typer.Option("--replace", help="update the trigger if it exists")
    ] = False,
    url: URL = DEFAULT_URL,
    as_json: JSON = False,
) -> None:
    """Create a trigger (or replace one with --replace)."""
    body: dict[str, Any] = {"function": function, "enabled": not disabled}
    shortcuts = {"bucket": bucket, "key_prefix": prefix, "key_suffix": suffix}
    body.update({k: v for k, v in shortcuts.items() if v is not None})
    if event_type:
        body["event_types"] = event_type
    if filters:
        body["filters"] = parse_filters(filters)
    if param:
        body["params"] = _parse_params(param)
    if output_bucket:
        body["output"] = {"bucket": output_bucket}
        if output_key:
            body["output"]["key_template"] = output_key
    elif output_key:
        raise typer.BadParameter("--output-key needs --output-bucket")
    with _client(url) as client:
        if replace:
            trigger = _check(client.put(f"/v1/triggers/{name}", json=body))
        else:
            trigger = _check(client.post("/v1/triggers", json={"name": name, **body}))
    if as_json:
        _emit(trigger, True)
    else:
        console.print(
            f"[green]trigger[/green] {trigger['name']} -> {trigger['function']} "
            f"version {trigger['version']}"
        )


@trigger_app.command("list")
def trigger_list(
    function: Annotated[str | None, typer.Option("--function", "-f")] = None,
    url: URL = DEFAULT_URL,
    as_json: JSON = False,
) -> None:
    """Every trigger (of one function with --function)."""
    params = {"function": function} if function else {}
    with _client(url) as client:
        items = _check(client.get("/v1/triggers", params=params))
    if as_json:
        _emit(items, True)
        return
    table = Table("name", "function", "enabled", "matches", "output", "version")
    for t in items:
        table.add_row(
            t["name"],
            t["function"],
            "yes" if t["enabled"] else "[yellow]no[/yellow]",
            _describe(t),
            f"{t['output']['bucket']}/{t['output']['key_template']}" if t.get("output") else "-",
            str(t["version"]),
        )
    console.print(table)


def _describe(t: dict[str, Any]) -> str:
    parts = []
    if t.get("bucket"):
        parts.append(f"bucket={t['bucket']}")
    if t.get("key_prefix"):
        parts.append(f"prefix={t['key_prefix']}")
    if t.get("key_suffix"):
        parts.append(f"suffix={t['key_suffix']}")
    if t.get("event_types"):
        parts.append("type=" + ",".join(t["event_types"]))
    if t.get("filters"):
        parts.append(orjson.dumps(t["filters"]).decode()[:60])
    return " ".join(parts)


@trigger_app.command("get")
def trigger_get(name: str, url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """One trigger."""
    with _client(url) as client:
        _emit(_check(client.get(f"/v1/triggers/{name}")), as_json)


@trigger_app.command("delete")
def trigger_delete(name: str, url: URL = DEFAULT_URL) -> None:
    """Delete a trigger."""
    with _client(url) as client:
        _check(client.delete(f"/v1/triggers/{name}"))
    console.print(f"deleted {name}")


@trigger_app.command("enable")
def trigger_enable(name: str, url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """Let a trigger invoke its function again."""
    with _client(url) as client:
        trigger = _check(client.post(f"/v1/triggers/{name}/enable"))
    if as_json:
        _emit(trigger, True)
    else:
        console.print(f"enabled {name}")


@trigger_app.command("disable")
def trigger_disable(name: str, url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """Stop a trigger from invoking (its matches are reported as skipped)."""
    with _client(url) as client:
        trigger = _check(client.post(f"/v1/triggers/{name}/disable"))
    if as_json:
        _emit(trigger, True)
    else:
        console.print(f"disabled {name}")


def dispatcher_command() -> None:
    """Run only the trigger dispatcher (DEEPFAAS_NATS_URL names the bus)."""
    import asyncio
    import contextlib
    import logging

    from eventbus.dispatcher import run_dispatcher
    from eventbus.schedules import create_clock
    from eventbus.settings import BusSettings

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = BusSettings()
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C stops it; the dispatcher cleans up
        asyncio.run(
            run_dispatcher(
                settings.nats_url,
                prefix=settings.event_prefix,
                ack_wait=settings.ack_wait_s,
                freeze_gc=True,
                auth=settings.bus_auth("dispatcher"),
                clock=create_clock(settings.schedule_clock),
                schedule_grace_s=settings.schedule_grace_s,
            )
        )
