"""What every `deepfaas` command shares: the gateway client, its errors, parsing and output."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

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


def call(url: str, method: str, path: str, **kwargs: Any) -> Any:
    """One request to the gateway (``kwargs`` as httpx takes them); its checked JSON body."""
    with client(url) as c:
        return check(c.request(method, path, **kwargs))


def emit(value: Any, as_json: bool) -> None:
    """Print a value: indented JSON for scripts, highlighted JSON for people."""
    if as_json or not isinstance(value, dict | list):
        sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        console.print_json(orjson.dumps(value).decode())


def show(url: str, path: str, as_json: bool) -> None:
    """`get`: one object, printed as JSON."""
    emit(call(url, "GET", path), as_json)


def delete(url: str, path: str, done: str) -> None:
    """`delete`: delete the object at ``path`` and say ``done``."""
    call(url, "DELETE", path)
    console.print(done)


def say(value: Any, as_json: bool, message: str) -> None:
    """The answer as JSON for scripts, or one line for people."""
    if as_json:
        emit(value, True)
    else:
        console.print(message)


def table(
    items: Sequence[dict[str, Any]],
    as_json: bool,
    headers: Iterable[str | Column],
    row: Callable[[dict[str, Any]], Sequence[str]],
) -> None:
    """`list`: the items as JSON for scripts, or a table of one ``row`` per item."""
    if as_json:
        emit(items, True)
        return
    shown = Table(*headers)
    for item in items:
        shown.add_row(*row(item))
    console.print(shown)


def fail(message: str) -> NoReturn:
    """A usage error on one line (exit 2)."""
    err.print(f"[red]error[/red]: {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(2)


def parse_pairs(
    values: Iterable[str] | None, option: str, *, json_values: bool = False, key: str = "KEY"
) -> dict[str, Any]:
    """``KEY=VALUE`` options as a mapping; with ``json_values`` a value that parses as JSON
    (numbers, true, lists) is taken as JSON, any other as text."""
    pairs: dict[str, Any] = {}
    for pair in values or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{option} takes {key}=VALUE, not {pair!r}")
        pairs[name] = value
        if json_values:
            with contextlib.suppress(orjson.JSONDecodeError):
                pairs[name] = orjson.loads(value)
    return pairs


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
