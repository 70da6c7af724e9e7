"""`deepfaas deploy`: place runtimes across the sites (create, list, get, delete)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
import yaml
from rich.table import Table

from gateway.cli_common import DEFAULT_URL, JSON, URL, console
from gateway.cli_common import check as _check
from gateway.cli_common import client as _client
from gateway.cli_common import emit as _emit

deploy_app = typer.Typer(
    help="Deployments: runtimes placed on the best site of the hybrid cloud.",
    no_args_is_help=True,
)


def _pairs(values: list[str] | None, what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in values or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{what} takes KEY=VALUE, not {pair!r}")
        try:
            out[key] = orjson.loads(value)
        except orjson.JSONDecodeError:
            out[key] = value
    return out


@deploy_app.command("create")
def deploy_create(
    name: Annotated[str | None, typer.Argument(help="deployment name")] = None,
    template: Annotated[Path | None, typer.Option(help="a TOSCA template file")] = None,
    template_name: Annotated[
        str | None, typer.Option("--template-name", help="a template under infra/tosca/templates")
    ] = None,
    spec: Annotated[Path | None, typer.Option(help="a runtime spec (YAML or JSON)")] = None,
    inputs: Annotated[list[str] | None, typer.Option("--input", "-i", help="KEY=VALUE")] = None,
    datacentre: Annotated[list[str] | None, typer.Option(help="allowed datacentre")] = None,
    region: Annotated[list[str] | None, typer.Option(help="allowed region")] = None,
    site: Annotated[list[str] | None, typer.Option(help="allowed site")] = None,
    label: Annotated[list[str] | None, typer.Option(help="site label KEY=VALUE")] = None,
    max_cost: Annotated[float | None, typer.Option(help="most cost per hour")] = None,
    wait: Annotated[float | None, typer.Option(help="wait up to this many seconds")] = None,
    url: URL = DEFAULT_URL,
    as_json: JSON = False,
) -> None:
    """Create or update a deployment from a template or a spec."""
    body: dict[str, Any] = {}
    if name:
        body["name"] = name
    if template is not None:
        body["template"] = template.read_text()
    if template_name is not None:
        body["template_path"] = template_name
    if spec is not None:
        body["spec"] = yaml.safe_load(spec.read_text())
    if inputs:
        body["inputs"] = _pairs(inputs, "--input")
    constraints: dict[str, Any] = {"datacentres": datacentre, "regions": region, "sites": site,
                                   "max_cost_per_hour": max_cost}  # fmt: skip
    if label:
        constraints["labels"] = {k: str(v) for k, v in _pairs(label, "--label").items()}
    body["constraints"] = {k: v for k, v in constraints.items() if v}
    params = {"wait": wait} if wait else {}
    with _client(url) as client:
        answer = _check(client.post("/v1/deployments", json=body, params=params))
    if as_json or "activation_id" not in answer:
        _emit(answer, as_json)
    else:
        console.print(
            f"[green]accepted[/green] deployment {answer['deployment']}: "
            f"activation {answer['activation_id']}"
        )


@deploy_app.command("list")
def deploy_list(url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """Every deployment."""
    with _client(url) as client:
        items = _check(client.get("/v1/deployments"))
    if as_json:
        _emit(items, True)
        return
    table = Table("name", "version", "desired", "status", "site", "reason")
    for d in items:
        table.add_row(d["name"], str(d["version"]), d["desired"], d["status"], d["site"] or "-",
                      (d["reason"] or "")[:60])  # fmt: skip
    console.print(table)


@deploy_app.command("get")
def deploy_get(name: str, url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """One deployment, with the sites tried."""
    with _client(url) as client:
        _emit(_check(client.get(f"/v1/deployments/{name}")), as_json)


@deploy_app.command("delete")
def deploy_delete(
    name: str,
    wait: Annotated[float | None, typer.Option(help="wait up to this many seconds")] = None,
    url: URL = DEFAULT_URL,
    as_json: JSON = False,
) -> None:
    """Undeploy: release the runtime; the record stays, marked released."""
    params = {"wait": wait} if wait else {}
    with _client(url) as client:
        _emit(_check(client.delete(f"/v1/deployments/{name}", params=params)), as_json)
