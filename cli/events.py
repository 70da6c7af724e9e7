"""`deepfaas events tail`: follow the namespace's events as the gateway stores them."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import httpx
import orjson
import typer
from rich.markup import escape

from cli.common import DEFAULT_URL, URL, check, client, console, err

events_app = typer.Typer(help="Events on the bus.", no_args_is_help=True)


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
            client(url, timeout=httpx.Timeout(10.0, read=None)) as c,
            c.stream("GET", "/v1/events/stream", params=params, headers=headers) as response,
        ):
            if response.is_error:
                response.read()
                check(response)
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
