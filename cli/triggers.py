"""`deepfaas trigger`: bind event filters (or schedules) to functions from the command line."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import orjson
import typer

from cli.common import (
    DEFAULT_URL,
    JSON,
    URL,
    call,
    console,
    delete,
    emit,
    parse_filters,
    parse_pairs,
    say,
    table,
)

trigger_app = typer.Typer(
    help="Triggers: run a function when a matching event arrives.", no_args_is_help=True
)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_every(text: str) -> int:
    """An interval such as ``90``, ``30s``, ``10m``, ``2h`` or ``1d``, in seconds."""
    value = text.strip().lower()
    factor = _UNITS.get(value[-1:], 0)
    number = value[:-1] if factor else value
    if not number.isdigit() or int(number) == 0:
        raise typer.BadParameter(f"--every takes a whole number of s, m, h or d, not {text!r}")
    return int(number) * (factor or 1)


def schedule_of(
    cron: str | None,
    tz: str | None,
    every: str | None,
    catch_up: str | None,
    start: str | None,
    stop: str | None,
    payload: str | None,
) -> dict[str, Any] | None:
    """The `schedule` of a trigger from the options (the gateway checks the rest)."""
    if cron is None and every is None:
        if any(v is not None for v in (tz, catch_up, start, stop, payload)):
            raise typer.BadParameter(
                "--tz, --catch-up, --start, --stop and --payload need --cron or --every"
            )
        return None
    if cron is not None and every is not None:
        raise typer.BadParameter("give --cron or --every, not both")
    schedule: dict[str, Any] = {"cron": cron} if cron is not None else {}
    if every is not None:
        schedule["interval_s"] = parse_every(every)
    optional = {"timezone": tz, "catch_up": catch_up, "start": start, "stop": stop}
    schedule.update({k: v for k, v in optional.items() if v is not None})
    if payload is not None:
        try:
            schedule["payload"] = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise typer.BadParameter(f"--payload is not JSON: {exc}") from exc
    return schedule


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
    cron: Annotated[
        str | None, typer.Option(help="schedule: cron expression, e.g. '0 3 * * *'")
    ] = None,
    tz: Annotated[str | None, typer.Option(help="schedule: IANA time zone of --cron")] = None,
    every: Annotated[
        str | None, typer.Option(help="schedule: an interval instead, e.g. 10m, 30s, 2h")
    ] = None,
    catch_up: Annotated[
        str | None, typer.Option(help="schedule: a tick missed while down: once (default) or skip")
    ] = None,
    start: Annotated[str | None, typer.Option(help="schedule: no tick before (RFC 3339)")] = None,
    stop: Annotated[str | None, typer.Option(help="schedule: no tick after (RFC 3339)")] = None,
    payload: Annotated[
        str | None, typer.Option(help="schedule: JSON object handed to each tick")
    ] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="create it disabled")] = False,
    replace: Annotated[
        bool, typer.Option("--replace", help="update the trigger if it exists")
    ] = False,
    url: URL = DEFAULT_URL,
    as_json: JSON = False,
) -> None:
    """Create a trigger (or replace one with --replace); a schedule prints its next fire times."""
    body: dict[str, Any] = {"function": function, "enabled": not disabled}
    schedule = schedule_of(cron, tz, every, catch_up, start, stop, payload)
    if schedule is not None:
        body["schedule"] = schedule
    shortcuts = {"bucket": bucket, "key_prefix": prefix, "key_suffix": suffix}
    body.update({k: v for k, v in shortcuts.items() if v is not None})
    if event_type:
        body["event_types"] = event_type
    if filters:
        body["filters"] = parse_filters(filters)
    if param:
        body["params"] = parse_pairs(param, "--param", json_values=True)
    if output_bucket:
        body["output"] = {"bucket": output_bucket}
        if output_key:
            body["output"]["key_template"] = output_key
    elif output_key:
        raise typer.BadParameter("--output-key needs --output-bucket")
    if replace:
        trigger = call(url, "PUT", f"/v1/triggers/{name}", json=body)
    else:
        trigger = call(url, "POST", "/v1/triggers", json={"name": name, **body})
    if as_json:
        emit(trigger, True)
    else:
        console.print(
            f"[green]trigger[/green] {trigger['name']} -> {trigger['function']} "
            f"version {trigger['version']}"
        )
        print_fires(trigger)


def print_fires(trigger: dict[str, Any]) -> None:
    """The next fire times of a scheduled trigger, in UTC and in the schedule's zone."""
    schedule = trigger.get("schedule")
    if not schedule:
        return
    zone = ZoneInfo(schedule.get("timezone") or "UTC")
    console.print("next fire times:")
    for text in trigger.get("next_fires") or []:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        local = moment.astimezone(zone)
        console.print(f"  {moment:%Y-%m-%d %H:%M:%S} UTC   {local:%Y-%m-%d %H:%M:%S %Z}")


@trigger_app.command("list")
def trigger_list(
    function: Annotated[str | None, typer.Option("--function", "-f")] = None,
    url: URL = DEFAULT_URL,
    as_json: JSON = False,
) -> None:
    """Every trigger (of one function with --function)."""
    params = {"function": function} if function else {}
    table(
        call(url, "GET", "/v1/triggers", params=params),
        as_json,
        ("name", "function", "enabled", "matches", "output", "version"),
        lambda t: (
            t["name"],
            t["function"],
            "yes" if t["enabled"] else "[yellow]no[/yellow]",
            describe(t),
            f"{t['output']['bucket']}/{t['output']['key_template']}" if t.get("output") else "-",
            str(t["version"]),
        ),
    )


def describe(t: dict[str, Any]) -> str:
    """What a trigger matches, on one line."""
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
    schedule = t.get("schedule")
    if schedule:
        when = schedule.get("cron") or f"every {schedule.get('interval_s')}s"
        parts.append(f"schedule={when} {schedule.get('timezone', 'UTC')}")
    return " ".join(parts)


@trigger_app.command("get")
def trigger_get(name: str, url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """One trigger (with its next fire times, when scheduled)."""
    trigger = call(url, "GET", f"/v1/triggers/{name}")
    emit(trigger, as_json)
    if not as_json:
        print_fires(trigger)


@trigger_app.command("delete")
def trigger_delete(name: str, url: URL = DEFAULT_URL) -> None:
    """Delete a trigger."""
    delete(url, f"/v1/triggers/{name}", f"deleted {name}")


@trigger_app.command("enable")
def trigger_enable(name: str, url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """Let a trigger invoke its function again."""
    say(call(url, "POST", f"/v1/triggers/{name}/enable"), as_json, f"enabled {name}")


@trigger_app.command("disable")
def trigger_disable(name: str, url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """Stop a trigger from invoking (its matches are reported as skipped)."""
    say(call(url, "POST", f"/v1/triggers/{name}/disable"), as_json, f"disabled {name}")
