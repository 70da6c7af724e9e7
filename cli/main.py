"""`deepfaas`: start the platform, manage functions, invoke them, read activations and events.

The whole command tree in one place: each group lives in its own module of this package, and
the commands that start processes (`up`, `gateway`, `controller`, ...) in `cli.processes`.
"""

from __future__ import annotations

import httpx
import typer

from cli import processes, storage
from cli.activations import act_app
from cli.auth import auth_app, auth_option
from cli.catalog import model_app
from cli.common import err
from cli.deployments import deploy_app
from cli.dlq import dlq_app
from cli.events import events_app
from cli.functions import fn_app
from cli.status import status
from cli.subscriptions import sub_app
from cli.triggers import trigger_app

app = typer.Typer(
    help="deepfaas: event-driven serverless functions for ML work.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.callback()(auth_option)  # `--auth` before any command

# commands, in the order `deepfaas --help` lists them
app.command("dispatcher")(processes.dispatcher)
app.command("upload")(storage.upload)
app.command("download")(storage.download)
app.command("ls")(storage.ls)
app.command("status")(status)
app.command("up")(processes.up)
app.command("storage-bridge")(processes.storage_bridge)
app.command("gateway")(processes.gateway)
app.command("controller")(processes.controller)
app.command("deliverer")(processes.deliverer)
app.command("bootstrap")(processes.bootstrap)

# command groups
app.add_typer(fn_app, name="fn")
app.add_typer(act_app, name="activation")
app.add_typer(events_app, name="events")
app.add_typer(dlq_app, name="dlq")
app.add_typer(sub_app, name="sub")
app.add_typer(trigger_app, name="trigger")
app.add_typer(model_app, name="model")
app.add_typer(deploy_app, name="deployment")
# the group's name before "deploy" came to mean only registering a function (`fn deploy`)
app.add_typer(deploy_app, name="deploy", hidden=True)
app.add_typer(storage.bucket_app, name="bucket")
app.add_typer(auth_app, name="auth")


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
