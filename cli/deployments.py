"""`deepfaas deployment` (alias `deploy`): place runtimes across the sites (create, list, get,
delete)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from cli.common import DEFAULT_URL, JSON, URL, call, console, emit, parse_pairs, show, table

deploy_app = typer.Typer(
    help="Deployments: runtimes placed on the best site of the hybrid cloud.",
    no_args_is_help=True,
)
WAIT = Annotated[float | None, typer.Option(help="wait up to this many seconds")]


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
    wait: WAIT = None,
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
        body["inputs"] = parse_pairs(inputs, "--input", json_values=True)
    constraints: dict[str, Any] = {"datacentres": datacentre, "regions": region, "sites": site,
                                   "max_cost_per_hour": max_cost}  # fmt: skip
    if label:
        labels = parse_pairs(label, "--label", json_values=True)
        constraints["labels"] = {k: str(v) for k, v in labels.items()}
    body["constraints"] = {k: v for k, v in constraints.items() if v}
    params = {"wait": wait} if wait else {}
    answer = call(url, "POST", "/v1/deployments", json=body, params=params)
    if as_json or "activation_id" not in answer:
        emit(answer, as_json)
    else:
        console.print(
            f"[green]accepted[/green] deployment {answer['deployment']}: "
            f"activation {answer['activation_id']}"
        )


@deploy_app.command("list")
def deploy_list(url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """Every deployment."""
    table(
        call(url, "GET", "/v1/deployments"),
        as_json,
        ("name", "version", "desired", "status", "site", "reason"),
        lambda d: (
            d["name"],
            str(d["version"]),
            d["desired"],
            d["status"],
            d["site"] or "-",
            (d["reason"] or "")[:60],
        ),
    )


@deploy_app.command("get")
def deploy_get(name: str, url: URL = DEFAULT_URL, as_json: JSON = False) -> None:
    """One deployment, with the sites tried."""
    show(url, f"/v1/deployments/{name}", as_json)


@deploy_app.command("delete")
def deploy_delete(
    name: str, wait: WAIT = None, url: URL = DEFAULT_URL, as_json: JSON = False
) -> None:
    """Undeploy: release the runtime; the record stays, marked released."""
    params = {"wait": wait} if wait else {}
    emit(call(url, "DELETE", f"/v1/deployments/{name}", params=params), as_json)
