"""What every `deepfaas` command shares: the gateway client, its error display, output."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.console import Console

try:  # typer 0.29 carries its own click; the context `--auth` sets lives there
    from typer._click.globals import get_current_context
except ImportError:  # pragma: no cover - older typer on the real click
    from click import get_current_context  # type: ignore[no-redef]

console = Console()
err = Console(stderr=True)
URL = Annotated[str, typer.Option("--url", envvar="DEEPFAAS_URL", help="gateway URL")]
JSON = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]
DEFAULT_URL = "http://127.0.0.1:8080"


def credential() -> str | None:
    """The `uuid:key` the CLI sends: `--auth`, $DEEPFAAS_AUTH, or `<data dir>/auth`."""
    ctx = get_current_context(silent=True)
    given = ctx.find_root().obj if ctx is not None else None
    if isinstance(given, dict) and given.get("auth"):
        return str(given["auth"])
    if os.environ.get("DEEPFAAS_AUTH"):
        return os.environ["DEEPFAAS_AUTH"].strip()
    path = Path(os.environ.get("DEEPFAAS_DATA_DIR", ".deepfaas")) / "auth"
    return path.read_text().strip() if path.is_file() else None


def client(url: str, timeout: float | httpx.Timeout | None = 75.0) -> httpx.Client:
    """An HTTP client for the gateway at ``url``, sending the CLI's credential."""
    found = credential()
    if found and found.lower().startswith("bearer "):
        headers = {"authorization": found}
        return httpx.Client(base_url=url, timeout=timeout, headers=headers)
    auth = tuple(found.split(":", 1)) if found and ":" in found else None
    return httpx.Client(base_url=url, timeout=timeout, auth=auth)  # type: ignore[arg-type]


def check(response: httpx.Response) -> Any:
    """The JSON body, or exit 1 with the problem's detail."""
    if response.is_error:
        try:
            body = response.json()
            detail = body.get("detail") or body
        except ValueError:
            detail = response.text
        err.print(f"[red]error {response.status_code}[/red]: {detail}")
        raise typer.Exit(1)
    if not response.content:
        return None
    return response.json()


def emit(value: Any, as_json: bool) -> None:
    """Print a value: indented JSON for scripts, highlighted JSON for people."""
    if as_json or not isinstance(value, dict | list):
        sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        console.print_json(orjson.dumps(value).decode())


def parse_filters(texts: list[str]) -> list[dict[str, Any]]:
    """`--filter` values: JSON filter objects or lists of them (a list is an implicit all)."""
    filters: list[dict[str, Any]] = []
    for text in texts:
        if text.startswith("@"):
            with open(text[1:], "rb") as handle:
                text = handle.read().decode()
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise typer.BadParameter(f"--filter takes JSON, not {text!r}: {exc}") from exc
        filters.extend(value if isinstance(value, list) else [value])
    return filters
