"""`deepfaas activation`: activation records (list, get, logs, result)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Column

from cli.common import DEFAULT_URL, JSON, URL, call, emit, show, table

act_app = typer.Typer(help="Activation records: list, get, logs, result.", no_args_is_help=True)


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
    table(
        call(url, "GET", "/v1/activations", params=params),
        as_json,
        ("function", "version", "status", "duration", "start", Column("id", no_wrap=True)),
        lambda a: (
            a["function"],
            str(a["version"]),
            a["status"],
            f"{a['duration_ms']:.1f} ms" if a.get("duration_ms") is not None else "-",
            a["start"][11:23],
            a["id"],
        ),
    )


@act_app.command("get")
def act_get(activation_id: str, url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """One activation record."""
    show(url, f"/v1/activations/{activation_id}", as_json)


@act_app.command("logs")
def act_logs(activation_id: str, url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """The log lines of an activation."""
    logs = call(url, "GET", f"/v1/activations/{activation_id}/logs")
    if as_json:
        emit(logs, True)
    else:
        for line in logs["logs"]:
            print(line)


@act_app.command("result")
def act_result(activation_id: str, url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """The result of an activation."""
    show(url, f"/v1/activations/{activation_id}/result", as_json)
