"""`deepfaas auth key create|list|revoke`, and the `--auth` option every command honours."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.common import DEFAULT_URL, JSON, URL, call, console, emit, table

auth_app = typer.Typer(help="API keys and namespaces.", no_args_is_help=True)
key_app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
auth_app.add_typer(key_app, name="key")


def auth_option(
    ctx: typer.Context,
    auth: Annotated[
        str | None,
        typer.Option("--auth", help="`uuid:key` (else $DEEPFAAS_AUTH, else .deepfaas/auth)"),
    ] = None,
) -> None:
    """deepfaas: event-driven serverless functions for ML work."""
    ctx.obj = {"auth": auth}


@key_app.command("create")
def create(
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="default: your own")
    ] = None,
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    url: URL = DEFAULT_URL,
    as_json: JSON = False,
) -> None:
    """Create a key; its `uuid:key` is printed this once."""
    body: dict[str, str] = {"description": description}
    if namespace:
        body["namespace"] = namespace
    made = call(url, "POST", "/v1/auth/keys", json=body)
    if as_json:
        emit(made, True)
        return
    console.print(f"key for namespace [bold]{made['namespace']}[/bold] (shown once):")
    print(made["key"])


@key_app.command("list")
def list_keys(
    namespace: Annotated[str | None, typer.Option("--namespace", "-n")] = None,
    url: URL = DEFAULT_URL,
    as_json: JSON = False,
) -> None:
    """Keys (never their secrets)."""
    params = {"namespace": namespace} if namespace else {}
    table(
        call(url, "GET", "/v1/auth/keys", params=params),
        as_json,
        ("uuid", "namespace", "created", "revoked", "description"),
        lambda k: (k["uuid"], k["namespace"], k["created"], k["revoked"] or "", k["description"]),
    )


@key_app.command("revoke")
def revoke(key_id: str, url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """Revoke a key: refused from the next request on."""
    emit(call(url, "DELETE", f"/v1/auth/keys/{key_id}"), as_json)
