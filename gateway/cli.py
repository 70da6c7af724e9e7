"""`deepfaas`: start the platform, manage functions, invoke them, read activations and events."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import orjson
import typer
import yaml
from rich.markup import escape
from rich.table import Table

from gateway import cli_auth, cli_status, cli_storage
from gateway.cli_common import DEFAULT_URL, JSON, URL, console, err
from gateway.cli_common import check as _check
from gateway.cli_common import client as _client
from gateway.cli_common import emit as _emit
from gateway.cli_deployments import deploy_app
from gateway.cli_models import model_app
from gateway.cli_subscriptions import sub_app
from gateway.cli_triggers import dispatcher_command, trigger_app

app = typer.Typer(
    help="deepfaas: event-driven serverless functions for ML work.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
fn_app = typer.Typer(
    help="Register, list, inspect, delete and invoke functions.", no_args_is_help=True
)
act_app = typer.Typer(help="Activation records: list, get, logs, result.", no_args_is_help=True)
events_app = typer.Typer(help="Events on the bus.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters: list, replay, delete.", no_args_is_help=True)
app.add_typer(fn_app, name="fn")
app.add_typer(act_app, name="activation")
app.add_typer(events_app, name="events")
app.add_typer(dlq_app, name="dlq")
app.add_typer(sub_app, name="sub")
app.add_typer(trigger_app, name="trigger")
app.add_typer(model_app, name="model")
app.add_typer(deploy_app, name="deploy")
app.command("dispatcher")(dispatcher_command)
cli_storage.register(app)
cli_auth.register(app)
cli_status.register(app)


@app.command()
def up(
    nats_cluster: Annotated[
        int | None,
        typer.Option(
            "--nats-cluster",
            min=1,
            max=9,
            help="start this many clustered nats-servers on loopback (3: try a cluster, every "
            "stream R3); the setting DEEPFAAS_NATS_CLUSTER",
        ),
    ] = None,
) -> None:
    """Start the whole platform here: nats-server, controller, workers, gateway (Ctrl-C stops)."""
    from gateway.up import main_up

    if nats_cluster is not None:
        os.environ["DEEPFAAS_NATS_CLUSTER"] = str(nats_cluster)  # read with the other settings
    main_up()


@app.command("storage-bridge")
def storage_bridge() -> None:
    """Run only the storage bridge (MinIO's notifications, or SeaweedFS's filer log)."""
    from gateway.storage_settings import storage_bridge_command

    storage_bridge_command()


@app.command()
def gateway() -> None:
    """Run only the gateway (DEEPFAAS_NATS_URL names the bus)."""
    import logging

    from eventbus import loop as event_loop
    from gateway.settings import GatewaySettings
    from gateway.up import run_gateway

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = GatewaySettings()
    event_loop.run(run_gateway(settings), uvloop=settings.uvloop)


@app.command()
def controller() -> None:
    """Run only the controller with the local provider (DEEPFAAS_NATS_URL names the bus)."""
    import logging

    from eventbus import loop as event_loop
    from gateway.up import UpSettings, run_controller, until_stopped, worker_env
    from runtimes.settings import ControllerSettings

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = ControllerSettings()
    from gateway.settings import GatewaySettings

    env = worker_env(
        GatewaySettings(nats_url=settings.nats_url, event_prefix=settings.event_prefix)
    )
    trusted = UpSettings().trusted_functions.split(",")
    event_loop.run(
        until_stopped(run_controller(settings, env, Path(settings.state_dir) / "logs", trusted)),
        uvloop=settings.uvloop,
    )


@app.command()
def deliverer() -> None:
    """Run only the subscriptions' deliverer (DEEPFAAS_NATS_URL names the bus)."""
    import asyncio
    import contextlib
    import logging

    from gateway.settings import GatewaySettings
    from gateway.up import run_deliverer, settings_or_exit, until_stopped

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = settings_or_exit(GatewaySettings)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(until_stopped(run_deliverer(settings)))


@app.command()
def bootstrap() -> None:
    """Declare the bus layout, register the built-ins and print a first API key (as `admin`)."""
    import asyncio

    from gateway.up import UpSettings, bootstrap_bus, settings_or_exit

    settings = settings_or_exit(UpSettings)
    key = asyncio.run(bootstrap_bus(settings))
    if key is None:
        print(f"the bus is ready; the key in {settings.data_dir / 'auth'} still works")
    else:
        print(f"the bus is ready; API key of namespace 'default' (shown once):\n{key}")


# -- functions ------------------------------------------------------------------------------


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--env takes KEY=VALUE, not {pair!r}")
        env[key] = value
    return env


#: where the built-in functions' specs live (`functions/<name>/function.yaml` from any folder)
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _read_text(path: Path, option: str) -> str:
    """A file named on the command line; a missing one is a one-line error, not a traceback."""
    tried = [path]
    if not path.is_absolute():
        tried.append(PROJECT_ROOT / path)
    for candidate in tried:
        if candidate.is_file():
            try:
                return candidate.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                _fail(f"{option} {candidate}: {exc}")
    where = " or ".join(str(p.absolute()) for p in tried)
    _fail(f"{option} {path}: no such file (looked for {where})")


def _read_spec(path: Path) -> dict[str, Any]:
    """A function.yaml as a mapping (one-line errors for a missing file or bad YAML)."""
    try:
        spec = yaml.safe_load(_read_text(path, "--spec"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        _fail(f"--spec {path} is not valid YAML{at}: {problem}")
    if spec is not None and not isinstance(spec, dict):
        _fail(f"--spec {path} must hold a mapping of function fields")
    return spec or {}


def _fail(message: str) -> NoReturn:
    """A usage error on one line (exit 2)."""
    err.print(f"[red]error[/red]: {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(2)


@fn_app.command("deploy")
def fn_deploy(
    name: Annotated[str, typer.Argument(help="function name")],
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Python file with the handler")
    ] = None,
    handler: Annotated[
        str, typer.Option(help="`function` in --file, or `module:function`")
    ] = "main",
    spec_file: Annotated[
        Path | None, typer.Option("--spec", help="function.yaml to start from")
    ] = None,
    script: Annotated[
        Path | None,
        typer.Option("--script", help="shell script run with /bin/sh (OSCAR's `script`)"),
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="seconds")] = None,
    memory: Annotated[int | None, typer.Option(help="MB")] = None,
    concurrency: Annotated[int | None, typer.Option()] = None,
    min_scale: Annotated[int | None, typer.Option()] = None,
    max_scale: Annotated[int | None, typer.Option()] = None,
    gpu: Annotated[int | None, typer.Option()] = None,
    network: Annotated[
        str | None, typer.Option(help="`egress` (default) or `none`: no network at all")
    ] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE")] = None,
    url: URL = DEFAULT_URL,
    as_json: JSON = False,
) -> None:
    """Create or update a function (an update bumps its version)."""
    body: dict[str, Any] = {}
    if spec_file is not None:
        body.update(_read_spec(spec_file))
    if script is not None:
        body["script"] = _read_text(script, "--script")
        body.pop("code", None)
        body.pop("handler", None)
    elif file is not None:
        body["code"] = _read_text(file, "--file")
        body["handler"] = handler
    elif "handler" not in body and "script" not in body:
        body["handler"] = handler
    options = {
        "timeout_s": timeout,
        "memory_mb": memory,
        "concurrency": concurrency,
        "min_scale": min_scale,
        "max_scale": max_scale,
        "gpu": gpu,
        "network": network,
    }
    body.update({k: v for k, v in options.items() if v is not None})
    if env:
        body["env"] = {**body.get("env", {}), **_parse_env(env)}
    body.pop("name", None)
    with _client(url) as client, console.status(f"deploying {name}…"):
        spec = _check(client.put(f"/v1/functions/{name}", json=body))
    if as_json:
        _emit(spec, True)
    else:
        console.print(f"[green]deployed[/green] {spec['name']} version {spec['version']}")


@fn_app.command("list")
def fn_list(url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """Every function."""
    with _client(url) as client:
        specs = _check(client.get("/v1/functions"))
    if as_json:
        _emit(specs, True)
        return
    table = Table("name", "version", "handler", "timeout", "concurrency", "scale")
    for s in specs:
        table.add_row(
            s["name"],
            str(s["version"]),
            s["handler"],
            f"{s['timeout_s']:g}s",
            str(s["concurrency"]),
            f"{s['min_scale']}..{s['max_scale']}",
        )
    console.print(table)


@fn_app.command("get")
def fn_get(name: str, url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """One function's spec."""
    with _client(url) as client:
        _emit(_check(client.get(f"/v1/functions/{name}")), as_json)


@fn_app.command("delete")
def fn_delete(name: str, url: URL = DEFAULT_URL) -> None:
    """Delete a function and its queued invocations."""
    with _client(url) as client:
        _check(client.delete(f"/v1/functions/{name}"))
    console.print(f"deleted {name}")


@fn_app.command("invoke")
def fn_invoke(
    name: str,
    data: Annotated[str, typer.Option("--data", "-d", help="JSON input, or @file")] = "{}",
    run_async: Annotated[
        bool, typer.Option("--async", help="return the activation id at once")
    ] = False,
    timeout: Annotated[float | None, typer.Option(help="longest wait, seconds")] = None,
    url: URL = DEFAULT_URL,
    as_json: JSON = False,
) -> None:
    """Invoke a function and print its result (or the activation id with --async)."""
    body = Path(data[1:]).read_bytes() if data.startswith("@") else data.encode()
    params: dict[str, Any] = {"async": "true"} if run_async else {}
    if timeout:
        params["timeout"] = timeout
    with _client(url, timeout=(timeout or 60) + 15) as client, console.status(f"invoking {name}…"):
        response = client.post(
            f"/v1/functions/{name}/invoke",
            content=body,
            params=params,
            headers={"content-type": "application/json"},
        )
    value = _check(response)
    if response.status_code == 202 and not as_json:
        console.print(f"accepted: activation [bold]{value['activation_id']}[/bold]")
        return
    _emit(value, as_json)


# -- activations ----------------------------------------------------------------------------


@act_app.command("list")
def act_list(
    function: Annotated[str | None, typer.Option("--function", "-f")] = None,
    limit: int = 30,
    url: URL = DEFAULT_URL,
    as_json: JSON = False,
) -> None:
    """The newest activations."""
    params: dict[str, Any] = {"limit": limit}
    if function:
        params["function"] = function
    with _client(url) as client:
        items = _check(client.get("/v1/activations", params=params))
    if as_json:
        _emit(items, True)
        return
    table = Table("function", "version", "status", "duration", "start")
    table.add_column("id", no_wrap=True)
    for a in items:
        duration = f"{a['duration_ms']:.1f} ms" if a.get("duration_ms") is not None else "-"
        start = a["start"][11:23]
        table.add_row(a["function"], str(a["version"]), a["status"], duration, start, a["id"])
    console.print(table)


@act_app.command("get")
def act_get(activation_id: str, url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """One activation record."""
    with _client(url) as client:
        _emit(_check(client.get(f"/v1/activations/{activation_id}")), as_json)


@act_app.command("logs")
def act_logs(activation_id: str, url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """The log lines of an activation."""
    with _client(url) as client:
        logs = _check(client.get(f"/v1/activations/{activation_id}/logs"))
    if as_json:
        _emit(logs, True)
    else:
        for line in logs["logs"]:
            print(line)


@act_app.command("result")
def act_result(activation_id: str, url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """The result of an activation."""
    with _client(url) as client:
        _emit(_check(client.get(f"/v1/activations/{activation_id}/result")), as_json)


# -- events and dead letters ----------------------------------------------------------------


@events_app.command("tail")
def events_tail(
    type_prefix: Annotated[str | None, typer.Option("--type", help="event type prefix")] = None,
    subject: Annotated[str | None, typer.Option("--subject", help="exact event subject")] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="start with the events stored from this RFC 3339 time"),
    ] = None,
    after: Annotated[
        int | None,
        typer.Option("--after", min=0, help="start after this stream sequence (resume)"),
    ] = None,
    count: Annotated[int | None, typer.Option("--count", "-n", help="stop after N events")] = None,
    url: URL = DEFAULT_URL,
    as_json: Annotated[
        bool | None,
        typer.Option(
            "--json/--text",
            help="one event per line in the JSON event format (the default when the output "
            "is not a terminal), or one short line per event",
        ),
    ] = None,
) -> None:
    """Follow the namespace's events as they are stored (Ctrl-C stops)."""
    params = {k: v for k, v in (("type", type_prefix), ("subject", subject), ("since", since)) if v}
    headers = {"last-event-id": str(after)} if after is not None else {}
    lines = not sys.stdout.isatty() if as_json is None else as_json
    seen, last_id = 0, after
    try:
        with (
            _client(url, timeout=httpx.Timeout(10.0, read=None)) as client,
            client.stream("GET", "/v1/events/stream", params=params, headers=headers) as response,
        ):
            if response.is_error:
                response.read()
                _check(response)
            for line in response.iter_lines():
                if line.startswith("id: "):
                    last_id = int(line[4:])
                if not line.startswith("data: "):
                    continue
                if lines:  # the gateway's compact JSON, as it came: one line, never wrapped
                    sys.stdout.write(line[6:] + "\n")
                    sys.stdout.flush()
                else:
                    event = orjson.loads(line[6:])
                    data = orjson.dumps(event.get("data")).decode()[:160]
                    console.print(
                        f"[dim]{escape(str(event.get('time', '')))}[/dim] "
                        f"[bold]{escape(event['type'])}[/bold] "
                        f"{escape(event.get('subject') or '')} {escape(data)}",
                        soft_wrap=True,
                        highlight=False,
                    )
                seen += 1
                if count is not None and seen >= count:
                    return
        ended, code = "the gateway ended the stream", 0  # it is stopping
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        ended, code = f"the connection broke ({exc})", 1
    except KeyboardInterrupt:
        return
    except BrokenPipeError:  # `| head`: the reader is gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return
    resume = "" if last_id is None else f"; resume with --after {last_id}"
    err.print(f"{ended}{resume}")
    raise typer.Exit(code)


@dlq_app.command("list")
def dlq_list(
    function: Annotated[str | None, typer.Option("--function", "-f")] = None,
    url: URL = DEFAULT_URL,
    as_json: JSON = False,
) -> None:
    """Dead letters, newest first."""
    params = {"function": function} if function else {}
    with _client(url) as client:
        items = _check(client.get("/v1/dlq", params=params))
    if as_json:
        _emit(items, True)
        return
    table = Table("seq", "kind", "target", "attempts", "error", "time")
    for d in items:
        table.add_row(
            str(d["seq"]), d["kind"], d["target"], str(d["attempts"]), d["error"][:80], d["time"]
        )
    console.print(table)


@dlq_app.command("replay")
def dlq_replay(seq: int, url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """Queue a dead-lettered invocation again."""
    with _client(url) as client:
        accepted = _check(client.post(f"/v1/dlq/{seq}/replay"))
    if as_json:
        _emit(accepted, True)
    else:
        console.print(f"replayed as activation [bold]{accepted['activation_id']}[/bold]")


def main() -> None:
    """Console-script entry point."""
    try:
        app(standalone_mode=True)
    except httpx.ConnectError as exc:
        err.print(f"[red]cannot reach the gateway[/red] ({exc}): is `make run` running?")
        raise SystemExit(2) from None
    except httpx.HTTPError as exc:
        err.print(f"[red]request failed[/red]: {exc}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
