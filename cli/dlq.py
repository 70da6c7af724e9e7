"""`deepfaas dlq`: dead letters (list, get, replay, delete)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.common import DEFAULT_URL, JSON, URL, call, delete, say, show, table

dlq_app = typer.Typer(help="Dead letters: list, get, replay, delete.", no_args_is_help=True)


@dlq_app.command("list")
def dlq_list(
    function: Annotated[str | None, typer.Option("--function", "-f")] = None,
    url: URL = DEFAULT_URL,
    as_json: JSON = False,
) -> None:
    """Dead letters, newest first."""
    params = {"function": function} if function else {}
    table(
        call(url, "GET", "/v1/dlq", params=params),
        as_json,
        ("seq", "kind", "target", "attempts", "error", "time"),
        lambda d: (
            str(d["seq"]),
            d["kind"],
            d["target"],
            str(d["attempts"]),
            d["error"][:80],
            d["time"],
        ),
    )


@dlq_app.command("replay")
def dlq_replay(seq: int, url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """Queue a dead-lettered invocation again."""
    accepted = call(url, "POST", f"/v1/dlq/{seq}/replay")
    say(accepted, as_json, f"replayed as activation [bold]{accepted['activation_id']}[/bold]")


@dlq_app.command("get")
def dlq_get(seq: int, url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """One dead letter: the event, the error, the attempts."""
    show(url, f"/v1/dlq/{seq}", as_json)


@dlq_app.command("delete")
def dlq_delete(seq: int, url: URL = DEFAULT_URL) -> None:
    """Remove a dead letter (after it was dealt with)."""
    delete(url, f"/v1/dlq/{seq}", f"dead letter {seq} deleted")
