"""The sites file: validation with clear errors, credentials references and their resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from runtimes.errors import CredentialsError, SiteConfigError
from runtimes.placement.sites import (
    Site,
    SiteFigures,
    SiteKind,
    gpu_model_matches,
    load_sites,
    resolve_credentials,
    with_discovered_gpus,
)
from runtimes.providers.local import Gpu

EXAMPLE = Path(__file__).resolve().parents[2] / "infra" / "sites.yaml"
SECRET = "s3cr3t-Value-42"


def site_doc(name: str = "k8s", **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": name,
        "kind": "kubernetes",
        "endpoint": "https://k8s.example.org:6443",
        "credentials": {"env": "K8S_TOKEN"},
        "region": "eu",
        "capacity": {"cpus": 8, "memory_mb": 16384},
        "sla": {"availability": 0.99},
    }
    doc.update(overrides)
    return doc


def write(tmp_path: Path, *sites: dict[str, Any]) -> Path:
    path = tmp_path / "sites.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "sites": list(sites)}))
    return path


def test_example_file_loads_with_every_kind() -> None:
    sites = load_sites(EXAMPLE)
    assert {s.kind for s in sites.sites} == set(SiteKind)
    local = sites.get("local")
    assert local is not None and local.capacity.gpus == () and local.credentials is None
    gpu_site = next(s for s in sites.sites if s.kind is SiteKind.KUBERNETES)
    assert len({g.model for g in gpu_site.capacity.gpus}) >= 2
    for site in sites.sites:
        if site.kind is not SiteKind.LOCAL:
            assert site.credentials is not None and site.credentials.env is not None


def test_good_file_round_trips(tmp_path: Path) -> None:
    gpus = [{"model": "a100", "vendor": "nvidia", "count": 4, "cost_per_hour": 2.0}]
    doc = site_doc(capacity={"cpus": 8, "memory_mb": 1024, "gpus": gpus}, labels={"a": "b"})
    site = load_sites(write(tmp_path, doc, site_doc("ow", kind="openwhisk"))).sites[0]
    assert site.capacity.gpus[0].count == 4 and site.labels == {"a": "b"}
    assert site.kind is SiteKind.KUBERNETES and site.sla.availability == 0.99


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"kind": "mesos"}, "kind", ["unknown site kind 'mesos'", "local, kubernetes, openwhisk"]),
        ({"credentials": {"token": SECRET}}, "credentials", ["'token'", "literal secret"]),
        ({"credentials": SECRET}, "credentials", ["literal value", "{env: VAR}"]),
        ({"credentials": {"env": "A", "file": "b"}}, "credentials", ["exactly one"]),
        ({"password": SECRET}, "password", ["literal secret"]),
        ({"endpoint": f"https://u:{SECRET}@h.example.org"}, "endpoint", ["user or password"]),
        ({"endpoint": "k8s.example.org"}, "endpoint", ["http:// or https://"]),
        ({"credentials": None}, "credentials", ["kubernetes site needs a credentials reference"]),
        ({"endpoint": None}, "endpoint", ["needs an endpoint"]),
        ({"sla": {"availability": 1.5}}, "sla.availability", ["less than or equal to 1"]),
        ({"capacity": {"cpus": 0, "memory_mb": 1}}, "capacity.cpus", ["greater than 0"]),
        ({"cost_per_hour": float("inf")}, "cost_per_hour", ["finite number"]),
        ({"credentials": {"envv": "X"}}, "credentials", ["unknown credentials field 'envv'"]),
    ],
)
def test_bad_site_names_site_and_field(
    tmp_path: Path, overrides: dict[str, Any], field: str, words: list[str]
) -> None:
    with pytest.raises(SiteConfigError) as info:
        load_sites(write(tmp_path, site_doc("ok"), site_doc("bad", **overrides)))
    err = info.value
    assert err.fields["site"] == "bad" and err.fields["field"] == field
    assert len(err.fields["errors"]) == 1
    assert "site 'bad'" in err.message and f"field '{field}'" in err.message
    for word in words:
        assert word in err.message
    # The secret must not leak through the message, the structured fields or the cause.
    assert SECRET not in f"{err} {err.fields} {err.__cause__}"


def test_duplicate_names(tmp_path: Path) -> None:
    with pytest.raises(SiteConfigError) as info:
        load_sites(write(tmp_path, site_doc("twin"), site_doc("other"), site_doc("twin")))
    assert info.value.fields["site"] == "twin" and info.value.fields["field"] == "name"
    assert "duplicate site name 'twin'" in info.value.message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("version: 1\nsites: [", "not valid YAML"),
        ("- just a list", "must be a mapping"),
        ("version: 2\nsites: []", "version"),
        ("version: 1\nsites: []", "field 'sites': the file lists no sites"),
    ],
)
def test_bad_file(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "sites.yaml"
    path.write_text(text)
    with pytest.raises(SiteConfigError, match=words):
        load_sites(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SiteConfigError, match="cannot read"):
        load_sites(tmp_path / "absent.yaml")


def make_site(**overrides: Any) -> Site:
    return Site.model_validate(site_doc(**overrides))


def test_credentials_from_env() -> None:
    assert resolve_credentials(make_site(), {"K8S_TOKEN": "tok"}, None) == "tok"


@pytest.mark.parametrize(("env", "state"), [({}, "is not set"), ({"K8S_TOKEN": ""}, "is empty")])
def test_missing_env_credentials(env: dict[str, str], state: str) -> None:
    with pytest.raises(CredentialsError) as info:
        resolve_credentials(make_site(name="gpu-1"), env, None)
    assert info.value.fields == {"site": "gpu-1", "reference": "env:K8S_TOKEN"}
    assert "site 'gpu-1'" in info.value.message and "env:K8S_TOKEN" in info.value.message
    assert state in info.value.message


def test_credentials_from_secret_file(tmp_path: Path) -> None:
    (tmp_path / "k8s.token").write_text("tok\n")
    site = make_site(credentials={"file": "k8s.token"})
    assert resolve_credentials(site, {}, tmp_path) == "tok"
    absolute = make_site(credentials={"file": str(tmp_path / "k8s.token")})
    assert resolve_credentials(absolute, {}, None) == "tok"


@pytest.mark.parametrize(
    ("ref", "secrets_dir", "words"),
    [
        ("absent.token", True, "no secret file"),
        ("empty.token", True, "is empty"),
        ("k8s.token", False, "needs a secrets dir"),
        ("../outside.token", True, "outside the secrets dir"),
    ],
)
def test_missing_file_credentials(tmp_path: Path, ref: str, secrets_dir: bool, words: str) -> None:
    root = tmp_path / "secrets"
    root.mkdir()
    (root / "empty.token").write_text("\n")
    (tmp_path / "outside.token").write_text("x")
    with pytest.raises(CredentialsError, match=words) as info:
        resolve_credentials(make_site(credentials={"file": ref}), {}, root if secrets_dir else None)
    assert info.value.fields == {"site": "k8s", "reference": f"file:{ref}"}


def test_local_site_needs_no_credentials() -> None:
    local = Site.model_validate(
        {
            "name": "local",
            "kind": "local",
            "region": "here",
            "capacity": {"cpus": 2, "memory_mb": 2048},
            "sla": {"availability": 0.9},
        }
    )
    assert resolve_credentials(local, {}, None) is None
    found = with_discovered_gpus(local, [Gpu(0, "NVIDIA H100", 81559), Gpu(1, "NVIDIA H100", 0)])
    assert [(g.model, g.vendor, g.count) for g in found.capacity.gpus] == [
        ("NVIDIA H100", "nvidia", 2)
    ]
    assert local.capacity.gpus == ()


def test_figures_fold_gpu_models() -> None:
    figures = SiteFigures(free_gpus={"A100": 1, "a100": 2, "T4": 0})
    assert figures.free_gpus == {"a100": 3, "t4": 0}


def test_figures_reject_bad_values() -> None:
    with pytest.raises(pydantic.ValidationError):
        SiteFigures(free_gpus={"a100": -1})
    with pytest.raises(pydantic.ValidationError):
        SiteFigures(utilisation=1.2)


@pytest.mark.parametrize(
    ("want", "have", "match"),
    [
        ("a100", "a100", True),
        ("A100", "NVIDIA A100-SXM4-80GB", True),
        ("a100 sxm4", "NVIDIA A100-SXM4-80GB", True),
        ("a10", "a100", False),
        ("h100", "NVIDIA A100-SXM4-80GB", False),
        ("", "a100", False),
    ],
)
def test_gpu_model_matches(want: str, have: str, match: bool) -> None:
    assert gpu_model_matches(want, have) is match
