"""`deepfaas upload|download|ls|bucket`: files in and out of the platform's storage over HTTP.

``upload PATH... BUCKET[/PREFIX]`` puts files as ``PREFIX/<name>``; a directory goes up
recursively under its own name (as ``cp -r`` copies it). ``download BUCKET/KEY [DEST]`` gets
one object, or every object under a prefix (``BUCKET/PREFIX/`` or a key that is no object),
kept under the prefix's last folder name. Transfers stream, several at a time, with a
progress bar of bytes. `cli.main` adds the commands and the ``bucket`` group to the main CLI.
"""

from __future__ import annotations

import mimetypes
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import quote

import httpx
import orjson
import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from cli.common import DEFAULT_URL, JSON, URL, check, client, console, err

CHUNK: Final = 1024 * 1024

bucket_app = typer.Typer(help="Buckets: create, list, delete.", no_args_is_help=True)
#: the commands on their own (``register`` adds them to another app)
storage_app = typer.Typer(help="Storage: upload, download, ls, bucket.", no_args_is_help=True)

CONCURRENCY = Annotated[
    int, typer.Option("--concurrency", "-c", min=1, max=32, help="transfers at once")
]


class TransferError(Exception):
    """One transfer failed; the message says which and why."""


def _client(url: str) -> httpx.Client:
    return client(url, timeout=httpx.Timeout(30.0, read=300.0, write=300.0))


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
        return str(body.get("detail") or body)
    except ValueError:
        return response.text


def object_path(bucket: str, key: str) -> str:
    """The gateway path of an object (the key percent-encoded, slashes kept)."""
    return f"/v1/buckets/{bucket}/objects/{quote(key, safe='/')}"


def split_target(target: str) -> tuple[str, str]:
    """``BUCKET[/KEY-OR-PREFIX]`` as ``(bucket, rest)``."""
    bucket, _, rest = target.partition("/")
    if not bucket:
        raise typer.BadParameter(f"{target!r} names no bucket (BUCKET[/PREFIX])")
    return bucket, rest


def plan_uploads(paths: list[Path], prefix: str) -> list[tuple[Path, str]]:
    """(file, key) of every file to upload: files by name, directories recursively."""
    base = prefix.strip("/")
    plan: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            root = path.resolve().name
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                plan.append(
                    (file, "/".join(filter(None, (base, root, file.relative_to(path).as_posix()))))
                )
        elif path.is_file():
            plan.append((path, "/".join(filter(None, (base, path.name)))))
        else:
            raise typer.BadParameter(f"{path} is neither a file nor a directory")
    return plan


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=not err.is_terminal,
    )


def _run_all(
    jobs: Sequence[Callable[[], str]], concurrency: int, progress: Progress, task: Any
) -> list[str]:
    """Run the transfers, a few at once; the failures' messages."""
    failures: list[str] = []
    with ThreadPoolExecutor(concurrency) as pool:
        futures = [pool.submit(job) for job in jobs]
        for done, future in enumerate(as_completed(futures), 1):
            try:
                future.result()
            except (TransferError, httpx.HTTPError, OSError) as exc:
                failures.append(str(exc))
            progress.update(task, description=f"{done}/{len(jobs)} files")
    return failures


@storage_app.command("upload")
def upload(
    paths: Annotated[list[Path], typer.Argument(help="files and directories")],
    dest: Annotated[str, typer.Argument(help="BUCKET or BUCKET/PREFIX")],
    concurrency: CONCURRENCY = 4,
    url: URL = DEFAULT_URL,
    as_json: JSON = False,
) -> None:
    """Upload files and directories (recursively) to a bucket, several at once."""
    bucket, prefix = split_target(dest)
    plan = plan_uploads(paths, prefix)
    total = sum(path.stat().st_size for path, _ in plan)
    uploaded: list[dict[str, Any]] = []
    lock = threading.Lock()
    with _client(url) as client, _progress() as progress:
        task = progress.add_task(f"0/{len(plan)} files", total=total)

        def put(path: Path, key: str) -> str:
            size = path.stat().st_size

            def chunks() -> Iterator[bytes]:
                with path.open("rb") as handle:
                    while chunk := handle.read(CHUNK):
                        progress.advance(task, len(chunk))
                        yield chunk

            headers = {
                "content-type": mimetypes.guess_type(path.name)[0] or "application/octet-stream",
                "content-length": str(size),
            }
            response = client.put(object_path(bucket, key), content=chunks(), headers=headers)
            if response.is_error:
                raise TransferError(
                    f"{path} -> {bucket}/{key}: {response.status_code} {_detail(response)}"
                )
            with lock:
                uploaded.append(response.json())
            return key

        jobs = [partial(put, path, key) for path, key in plan]
        failures = _run_all(jobs, concurrency, progress, task)
    _report(uploaded, failures, "uploaded", as_json)


def _report(done: list[dict[str, Any]], failures: list[str], verb: str, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(
            orjson.dumps(sorted(done, key=lambda d: str(d.get("key")))).decode() + "\n"
        )
    else:
        size = sum(int(d.get("size") or 0) for d in done)
        console.print(f"{verb} {len(done)} file(s), {size} bytes")
    for failure in failures:
        err.print(f"[red]failed[/red]: {failure}")
    if failures:
        raise typer.Exit(1)


def _list_all(
    client: httpx.Client, bucket: str, prefix: str, delimiter: str | None
) -> tuple[list[dict[str, Any]], list[str]]:
    objects: list[dict[str, Any]] = []
    prefixes: list[str] = []
    params: dict[str, Any] = {"prefix": prefix}
    if delimiter:
        params["delimiter"] = delimiter
    while True:
        page = check(client.get(f"/v1/buckets/{bucket}/objects", params=params))
        objects += page["objects"]
        prefixes += page["prefixes"]
        if not page["is_truncated"] or not page["next_marker"]:
            return objects, prefixes
        params["start_after"] = page["next_marker"]


def _fetch(
    client: httpx.Client, bucket: str, key: str, target: Path, progress: Progress, task: Any
) -> dict[str, Any]:
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.part")
    with client.stream("GET", object_path(bucket, key)) as response:
        if response.is_error:
            response.read()
            raise TransferError(f"{bucket}/{key}: {response.status_code} {_detail(response)}")
        size = 0
        with part.open("wb") as out:
            for chunk in response.iter_bytes(CHUNK):
                out.write(chunk)
                size += len(chunk)
                progress.advance(task, len(chunk))
    os.replace(part, target)
    return {"key": key, "size": size, "path": str(target)}


@storage_app.command("download")
def download(
    source: Annotated[str, typer.Argument(help="BUCKET/KEY, BUCKET/PREFIX/ or BUCKET")],
    dest: Annotated[Path | None, typer.Argument(help="file or directory")] = None,
    concurrency: CONCURRENCY = 4,
    url: URL = DEFAULT_URL,
    as_json: JSON = False,
) -> None:
    """Download an object, or every object under a prefix (kept under its last folder)."""
    bucket, key = split_target(source)
    with _client(url) as client:
        single = None
        if key and not key.endswith("/"):
            head = client.head(object_path(bucket, key))
            single = int(head.headers["content-length"]) if head.status_code == 200 else None
        if single is not None:
            target = dest or Path(key.rpartition("/")[2])
            if target.is_dir():
                target = target / key.rpartition("/")[2]
            plan = [(key, target, single)]
        else:
            prefix = key if not key or key.endswith("/") else key + "/"
            base = prefix.rstrip("/").rpartition("/")[0]
            base = base + "/" if base else ""
            root = (dest or Path(".")).resolve()
            objects, _ = _list_all(client, bucket, prefix, None)
            if not objects:
                err.print(f"[red]nothing at[/red] {source}")
                raise typer.Exit(1)
            plan = []
            for obj in objects:
                target = (root / obj["key"][len(base) :]).resolve()
                if not target.is_relative_to(root):
                    raise typer.BadParameter(f"key {obj['key']!r} would land outside {root}")
                plan.append((obj["key"], target, int(obj["size"])))
        done: list[dict[str, Any]] = []
        with _progress() as progress:
            task = progress.add_task(f"0/{len(plan)} files", total=sum(s for _, _, s in plan))
            lock = threading.Lock()

            def get(key: str, target: Path) -> str:
                result = _fetch(client, bucket, key, target, progress, task)
                with lock:
                    done.append(result)
                return key

            jobs = [partial(get, k, t) for k, t, _ in plan]
            failures = _run_all(jobs, concurrency, progress, task)
    _report(done, failures, "downloaded", as_json)


@storage_app.command("ls")
def ls(
    target: Annotated[
        str | None, typer.Argument(help="BUCKET or BUCKET/PREFIX; none: the buckets")
    ] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="no folders")] = False,
    url: URL = DEFAULT_URL,
    as_json: JSON = False,
) -> None:
    """List buckets, or the objects (and folders) of a bucket under a prefix."""
    if target is None:
        bucket_list(url=url, as_json=as_json)
        return
    bucket, prefix = split_target(target)
    with _client(url) as client:
        objects, prefixes = _list_all(client, bucket, prefix, None if recursive else "/")
        if not objects and prefixes == [prefix + "/"]:
            # `ls bucket/folder` means the folder's contents, as `ls` of a directory does
            prefix += "/"
            objects, prefixes = _list_all(client, bucket, prefix, None if recursive else "/")
    if as_json:
        body = {"objects": objects, "prefixes": prefixes}
        sys.stdout.write(orjson.dumps(body).decode() + "\n")
        return
    table = Table("size", "modified", "key")
    for folder in prefixes:
        table.add_row("PRE", "", folder)
    for obj in objects:
        table.add_row(str(obj["size"]), obj["last_modified"][:19], obj["key"])
    console.print(table)


@bucket_app.command("create")
def bucket_create(name: str, url: URL = DEFAULT_URL) -> None:
    """Create a bucket of your namespace (names are global: a taken one is refused)."""
    with _client(url) as client:
        check(client.put(f"/v1/buckets/{name}"))
    console.print(f"created bucket {name}")


@bucket_app.command("list")
def bucket_list(url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """Your namespace's buckets."""
    with _client(url) as client:
        buckets = check(client.get("/v1/buckets"))
    if as_json:
        sys.stdout.write(orjson.dumps(buckets).decode() + "\n")
        return
    table = Table("name", "created")
    for b in buckets:
        table.add_row(b["name"], (b.get("created") or "")[:19])
    console.print(table)


@bucket_app.command("delete")
def bucket_delete(name: str, url: URL = DEFAULT_URL) -> None:
    """Delete an empty bucket."""
    with _client(url) as client:
        check(client.delete(f"/v1/buckets/{name}"))
    console.print(f"deleted bucket {name}")


storage_app.add_typer(bucket_app, name="bucket")
