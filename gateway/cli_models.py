"""`deepfaas model`: the model catalog and the DEEPaaS-style model API from the command line."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from gateway.cli_common import DEFAULT_URL, JSON, URL, console
from gateway.cli_common import check as _check
from gateway.cli_common import client as _client
from gateway.cli_common import emit as _emit

model_app = typer.Typer(
    help="Models: publish, browse, version, promote, predict, train.", no_args_is_help=True
)
CATALOG = "/v1/catalog/modules"


@model_app.command("list")
def model_list(
    query: Annotated[str | None, typer.Option("--query", "-q", help="search text")] = None,
    keyword: Annotated[str | None, typer.Option(help="only modules with this keyword")] = None,
    url: URL = DEFAULT_URL,
    as_json: JSON = False,
) -> None:
    """List the catalog's modules."""
    params = {k: v for k, v in {"q": query, "keyword": keyword}.items() if v is not None}
    with _client(url) as client:
        modules = _check(client.get(CATALOG, params=params))
    if as_json:
        _emit(modules, True)
        return
    table = Table("name", "owner", "framework", "promoted", "latest", "description")
    for m in modules:
        table.add_row(
            m["name"],
            m.get("owner", "default"),
            m["framework"],
            str(m["promoted"]),
            str(m["latest"]),
            m["description"][:60],
        )
    console.print(table)


@model_app.command("get")
def model_get(name: str, url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """Show one module."""
    with _client(url) as client:
        _emit(_check(client.get(f"{CATALOG}/{name}")), as_json)


@model_app.command("publish")
def model_publish(
    plugin: Annotated[str, typer.Argument(help="the installed model plug-in")],
    no_train: Annotated[
        bool, typer.Option("--no-train", help="do not train a first version")
    ] = False,
    replace: Annotated[bool, typer.Option("--replace", help="update it if it exists")] = False,
    url: URL = DEFAULT_URL,
    as_json: JSON = False,
) -> None:
    """Publish a module from a plug-in's metadata, then train its first version."""
    spec = _local_spec(plugin)
    with _client(url) as client:
        if spec is None:  # not installed here: the gateway reads its own copy
            module = _check(client.post(f"/v1/catalog/publish/{plugin}?replace={replace}"))
        elif replace:
            module = _check(client.put(f"{CATALOG}/{plugin}", json=spec))
        else:
            module = _check(client.post(CATALOG, json=spec))
        answer: dict[str, Any] = {"module": module}
        if not no_train:
            answer["training"] = _check(client.post(f"/v2/models/{plugin}/train/"))
    if as_json:
        _emit(answer, True)
        return
    console.print(f"published [bold]{module['name']}[/bold] ({module['framework']})")
    if "training" in answer:
        uuid = answer["training"]["uuid"]
        console.print(f"training its first version: /v2/models/{plugin}/train/{uuid}")


def _local_spec(plugin: str) -> dict[str, Any] | None:
    from runtimes.catalog.plugins import discover_models

    if plugin not in discover_models():
        return None
    from gateway.routes.catalog import spec_from_plugin

    return spec_from_plugin(plugin).model_dump(mode="json", exclude_none=True)


@model_app.command("versions")
def model_versions(name: str, url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """List a module's versions."""
    with _client(url) as client:
        versions = _check(client.get(f"{CATALOG}/{name}/versions"))
    if as_json:
        _emit(versions, True)
        return
    table = Table("version", "state", "metrics", "reason", "created")
    for v in versions:
        score = v["metrics"].get(v["metric"])
        metrics = f"{v['metric']}={score:.4f}" if score is not None else ""
        table.add_row(str(v["version"]), v["state"], metrics, v["reason"] or "", v["created"])
    console.print(table)


@model_app.command("promote")
def model_promote(name: str, version: int, url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """Serve this version from now on."""
    with _client(url) as client:
        _emit(_check(client.post(f"{CATALOG}/{name}/versions/{version}/promote")), as_json)


@model_app.command("retire")
def model_retire(
    name: str,
    version: int,
    reason: Annotated[str, typer.Option(help="why")] = "retired",
    url: URL = DEFAULT_URL,
    as_json: JSON = False,
) -> None:
    """Withdraw a version (not the promoted one)."""
    with _client(url) as client:
        path = f"{CATALOG}/{name}/versions/{version}/retire"
        _emit(_check(client.post(path, json={"reason": reason})), as_json)


@model_app.command("rollback")
def model_rollback(
    name: str,
    to: Annotated[int | None, typer.Option("--to", help="version to go back to")] = None,
    url: URL = DEFAULT_URL,
    as_json: JSON = False,
) -> None:
    """Promote the version promoted before the current one (or --to)."""
    with _client(url) as client:
        _emit(_check(client.post(f"{CATALOG}/{name}/rollback", json={"to": to})), as_json)


@model_app.command("predict")
def model_predict(
    name: str,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="the input")],
    version: Annotated[int | None, typer.Option("--version", help="pin a version")] = None,
    url: URL = DEFAULT_URL,
    as_json: JSON = False,
) -> None:
    """Predict on a file (PNG, .npy, CSV) with the promoted (or pinned) version."""
    params = {"version": version} if version else {}
    with _client(url) as client, file.open("rb") as f:
        response = client.post(
            f"/v2/models/{name}/predict/", params=params, files={"data": (file.name, f)}
        )
    _emit(_check(response), as_json)


@model_app.command("train")
def model_train(
    name: str,
    csv: Annotated[
        Path | None, typer.Option("--csv", exists=True, dir_okay=False, help="labelled CSV")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="wait until it is done")] = False,
    timeout: Annotated[float, typer.Option(help="longest wait, seconds")] = 600.0,
    url: URL = DEFAULT_URL,
    as_json: JSON = False,
) -> None:
    """Train a new version (on a CSV, or on the plug-in's own data)."""
    with _client(url) as client:
        if csv is None:
            started = _check(client.post(f"/v2/models/{name}/train/"))
        else:
            with csv.open("rb") as f:
                files = {"data": (csv.name, f, "text/csv")}
                started = _check(client.post(f"/v2/models/{name}/train/", files=files))
        status = started
        deadline = time.monotonic() + timeout
        while wait and status["status"] == "running" and time.monotonic() < deadline:
            time.sleep(1.0)
            response = client.get(f"/v2/models/{name}/train/{started['uuid']}")
            if response.status_code != 404:  # 404 until a worker has picked it up
                status = _check(response)
    _emit(status, as_json)
    if status["status"] == "error":
        raise typer.Exit(1)
