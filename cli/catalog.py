"""`deepfaas model`: the model catalog and the DEEPaaS-style model API from the command line."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import DEFAULT_URL, JSON, URL, call, check, client, console, emit, show, table

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
    table(
        call(url, "GET", CATALOG, params=params),
        as_json,
        ("name", "owner", "framework", "promoted", "latest", "description"),
        lambda m: (
            m["name"],
            m.get("owner", "default"),
            m["framework"],
            str(m["promoted"]),
            str(m["latest"]),
            m["description"][:60],
        ),
    )


@model_app.command("get")
def model_get(name: str, url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """Show one module."""
    show(url, f"{CATALOG}/{name}", as_json)


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
    spec = local_spec(plugin)
    with client(url) as c:
        if spec is None:  # not installed here: the gateway reads its own copy
            module = check(c.post(f"/v1/catalog/publish/{plugin}?replace={replace}"))
        elif replace:
            module = check(c.put(f"{CATALOG}/{plugin}", json=spec))
        else:
            module = check(c.post(CATALOG, json=spec))
        answer: dict[str, Any] = {"module": module}
        if not no_train:
            answer["training"] = check(c.post(f"/v2/models/{plugin}/train/"))
    if as_json:
        emit(answer, True)
        return
    console.print(f"published [bold]{module['name']}[/bold] ({module['framework']})")
    if "training" in answer:
        uuid = answer["training"]["uuid"]
        console.print(f"training its first version: /v2/models/{plugin}/train/{uuid}")


def local_spec(plugin: str) -> dict[str, Any] | None:
    """The module spec of a plug-in installed here, or None (then the gateway reads its own)."""
    from runtimes.catalog.plugins import discover_models

    if plugin not in discover_models():
        return None
    from gateway.catalog_specs import spec_from_plugin

    return spec_from_plugin(plugin).model_dump(mode="json", exclude_none=True)


@model_app.command("versions")
def model_versions(name: str, url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """List a module's versions."""

    def row(v: dict[str, Any]) -> tuple[str, ...]:
        score = v["metrics"].get(v["metric"])
        metrics = f"{v['metric']}={score:.4f}" if score is not None else ""
        return str(v["version"]), v["state"], metrics, v["reason"] or "", v["created"]

    table(
        call(url, "GET", f"{CATALOG}/{name}/versions"),
        as_json,
        ("version", "state", "metrics", "reason", "created"),
        row,
    )


@model_app.command("promote")
def model_promote(name: str, version: int, url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """Serve this version from now on."""
    emit(call(url, "POST", f"{CATALOG}/{name}/versions/{version}/promote"), as_json)


@model_app.command("retire")
def model_retire(
    name: str,
    version: int,
    reason: Annotated[str, typer.Option(help="why")] = "retired",
    url: URL = DEFAULT_URL,
    as_json: JSON = False,
) -> None:
    """Withdraw a version (not the promoted one)."""
    path = f"{CATALOG}/{name}/versions/{version}/retire"
    emit(call(url, "POST", path, json={"reason": reason}), as_json)


@model_app.command("rollback")
def model_rollback(
    name: str,
    to: Annotated[int | None, typer.Option("--to", help="version to go back to")] = None,
    url: URL = DEFAULT_URL,
    as_json: JSON = False,
) -> None:
    """Promote the version promoted before the current one (or --to)."""
    emit(call(url, "POST", f"{CATALOG}/{name}/rollback", json={"to": to}), as_json)


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
    with file.open("rb") as f:
        path = f"/v2/models/{name}/predict/"
        emit(call(url, "POST", path, params=params, files={"data": (file.name, f)}), as_json)


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
    with client(url) as c:
        if csv is None:
            started = check(c.post(f"/v2/models/{name}/train/"))
        else:
            with csv.open("rb") as f:
                files = {"data": (csv.name, f, "text/csv")}
                started = check(c.post(f"/v2/models/{name}/train/", files=files))
        status = started
        deadline = time.monotonic() + timeout
        while wait and status["status"] == "running" and time.monotonic() < deadline:
            time.sleep(1.0)
            response = c.get(f"/v2/models/{name}/train/{started['uuid']}")
            if response.status_code != 404:  # 404 until a worker has picked it up
                status = check(response)
    emit(status, as_json)
    if status["status"] == "error":
        raise typer.Exit(1)
