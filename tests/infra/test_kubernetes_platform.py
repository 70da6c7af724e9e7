"""The platform's Kubernetes manifests (infra/kubernetes/): valid against the real schemas, and
consistent with the code they run (commands, roles, permissions, the provider's verbs).

No API server can run here: kubernetes-validate checks every object against the published
schemas, and the real nats-server checks the NATS configuration (`-t`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import typer.main
import yaml

from cli.main import app
from eventbus.permissions import ROLES, role_permissions
from eventbus.server import find_nats_server
from runtimes.placement.sites import SiteKind, load_sites
from runtimes.providers.k8s_manifests import DEFAULT_IMAGE, ManifestOptions, build_deployment
from runtimes.providers.kubernetes import KubernetesProvider
from runtimes.providers.registry import ProviderOptions, create_provider
from runtimes.types import RuntimeSpec

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "kubernetes"
PLATFORM = K8S / "platform"
VERSIONS = ["1.33", "1.37"]
NOT_OBJECTS = {"kustomization.yaml", "sites.yaml"}
SINGLE_ROLE = {"gateway", "dispatcher", "deliverer", "bridge"}


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _objects() -> list[tuple[str, dict[str, Any]]]:
    files = [p for p in sorted(PLATFORM.glob("*.yaml")) if p.name not in NOT_OBJECTS]
    files.append(K8S / "rbac.yaml")
    return [(p.name, d) for p in files for d in _docs(p)]


def _secrets() -> list[dict[str, Any]]:
    env = {**os.environ, "S3_ACCESS_KEY": "ak", "S3_SECRET_KEY": "sk"}
    out = subprocess.run(
        [str(PLATFORM / "secrets.sh")], env=env, capture_output=True, check=True, text=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


OBJECTS = _objects()
SECRETS = {d["metadata"]["name"]: d for d in _secrets()}


def _workloads() -> dict[str, dict[str, Any]]:
    kinds = ("Deployment", "StatefulSet", "Job")
    return {d["metadata"]["name"]: d for _, d in OBJECTS if d["kind"] in kinds}


def _pod(name: str) -> dict[str, Any]:
    return dict(_workloads()[name]["spec"]["template"]["spec"])


def _container(name: str) -> dict[str, Any]:
    [only] = _pod(name)["containers"]
    return dict(only)


def _env(name: str) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in _container(name).get("env", [])}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_validates_against_the_schemas(version: str) -> None:
    objects = [d for _, d in OBJECTS] + list(SECRETS.values())
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)
    kinds = {d["kind"] for d in objects}
    assert {"StatefulSet", "Deployment", "PodDisruptionBudget", "Role", "Job"} <= kinds


def test_kustomization_lists_every_file() -> None:
    kustomization = yaml.safe_load((PLATFORM / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in PLATFORM.glob("*.yaml")} - NOT_OBJECTS
    for generator in kustomization["configMapGenerator"]:
        for file in generator["files"]:
            assert (PLATFORM / file).is_file(), file
    referenced = {
        v["configMap"]["name"] for w in _workloads().values()
        for v in w["spec"]["template"]["spec"].get("volumes", []) if "configMap" in v
    }  # fmt: skip
    assert referenced == {g["name"] for g in kustomization["configMapGenerator"]}


def test_each_component_runs_a_command_the_cli_has() -> None:
    commands = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    runs = {name: _container(name).get("args", [""])[0] for name in _workloads()}
    assert {"gateway", "controller", "dispatcher", "deliverer", "bootstrap"} <= set(runs.values())
    for name, command in runs.items():
        if name != "nats":
            assert command in commands, (name, command)
    assert _workloads()["gateway"]["spec"]["replicas"] == 2
    assert _workloads()["controller"]["spec"]["replicas"] == 2
    assert _workloads()["nats"]["spec"]["replicas"] == 3


def test_pods_are_non_root_read_only_bounded_and_budgeted() -> None:
    budgets = {
        d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for _, d in OBJECTS
        if d["kind"] == "PodDisruptionBudget"
    }
    for name, workload in _workloads().items():
        pod, container = _pod(name), _container(name)
        assert container["image"] == DEFAULT_IMAGE, name
        resources = container["resources"]
        assert resources["requests"]["cpu"] and resources["requests"]["memory"], name
        assert resources["limits"]["memory"], name
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        if name == "controller":  # bubblewrap's sandboxes need root (the documented exception)
            assert pod["securityContext"]["runAsUser"] == 0
        else:
            assert pod["securityContext"]["runAsNonRoot"] is True, name
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], name
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        if workload["kind"] != "Job":
            assert workload["metadata"]["labels"]["app.kubernetes.io/name"] in budgets, name


def test_the_gateway_is_probed_on_healthz_and_readyz() -> None:
    gateway = _container("gateway")
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    nats = _container("nats")
    assert nats["readinessProbe"]["httpGet"]["path"].startswith("/healthz")


def test_each_pod_holds_only_its_own_roles_credentials() -> None:
    nats_secret = SECRETS["deepfaas-nats"]["stringData"]
    assert set(nats_secret) == {*ROLES, *(f"{r}.json" for r in ROLES)}
    for role in ROLES:
        assert json.loads(nats_secret[f"{role}.json"]) == {
            "user": role,
            "password": nats_secret[role],
        }
    for name in SINGLE_ROLE | {"deepfaas-bootstrap"}:
        role = "admin" if name == "deepfaas-bootstrap" else name
        env = _env(name)
        assert env["DEEPFAAS_NATS_USER"] == role
        password = env["DEEPFAAS_NATS_PASSWORD"]["secretKeyRef"]
        assert password == {"name": "deepfaas-nats", "key": role}
        inbox = "_INBOX" if role == "admin" else f"_INBOX.{role}"
        assert env["DEEPFAAS_NATS_INBOX_PREFIX"] == inbox
    [mount] = [v for v in _pod("controller")["volumes"] if "secret" in v]
    items = {i["key"] for i in mount["secret"]["items"]}
    assert items == {"controller.json", "worker.json", "platform-worker.json"}
    worker = SECRETS["deepfaas-worker-nats"]
    assert worker["metadata"]["namespace"] == "deepfaas-runtimes"
    assert worker["stringData"]["DEEPFAAS_NATS_PASSWORD"] == nats_secret["worker"]
    assert _env("controller")["DEEPFAAS_KUBERNETES_WORKER_SECRET"] == "deepfaas-worker-nats"


def _auth_users() -> dict[str, dict[str, Any]]:
    text = (PLATFORM / "nats" / "auth.conf").read_text()
    users = {}
    for line in text.splitlines():
        found = re.match(r'\s*\{user: "([^"]+)", password: \$(\w+), permissions: (.*)\}$', line)
        if found:
            role, variable, permissions = found.groups()
            users[role] = {"variable": variable, "permissions": json.loads(permissions)}
    return users


def render_auth_conf() -> str:
    """auth.conf as eventbus.permissions says it."""
    lines = [
        "# Generated from eventbus/permissions.py (one NATS user per platform role): regenerate",
        "# with `.venv/bin/python -m tests.infra.test_kubernetes_platform`. The passwords come",
        "# from the deepfaas-nats Secret as environment variables of the nats-server container.",
        "authorization {",
        "  users: [",
    ]
    for role in ROLES:
        variable = role.upper().replace("-", "_") + "_PASSWORD"
        permissions = json.dumps(role_permissions(role).config())
        lines.append(f'    {{user: "{role}", password: ${variable}, permissions: {permissions}}}')
    return "\n".join([*lines, "  ]", "}"]) + "\n"


def test_nats_users_are_the_platform_roles_with_their_permissions() -> None:
    regenerate = "regenerate: .venv/bin/python -m tests.infra.test_kubernetes_platform"
    assert (PLATFORM / "nats" / "auth.conf").read_text() == render_auth_conf(), regenerate
    users = _auth_users()
    assert set(users) == set(ROLES)
    env = _env("nats")
    for role, user in users.items():
        assert user["permissions"] == role_permissions(role).config()
        assert env[user["variable"]]["secretKeyRef"] == {"name": "deepfaas-nats", "key": role}


def test_nats_config_is_accepted_by_nats_server(tmp_path: Path) -> None:
    passwords = SECRETS["deepfaas-nats"]["stringData"]
    env = {"POD_NAME": "nats-0"}
    env |= {u["variable"]: passwords[role] for role, u in _auth_users().items()}
    config = PLATFORM / "nats" / "nats.conf"
    checked = subprocess.run(
        [find_nats_server(), "-c", str(config), "-t"], env=env, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr + checked.stdout
    del env["ADMIN_PASSWORD"]  # a Secret key missing: the server refuses to start
    missing = subprocess.run(
        [find_nats_server(), "-c", str(config), "-t"], env=env, capture_output=True, text=True
    )
    assert missing.returncode != 0 and "ADMIN_PASSWORD" in missing.stderr
    text = config.read_text()
    assert "jetstream" in text and text.count("nats-cluster.deepfaas") == 3
    claims = _workloads()["nats"]["spec"]["volumeClaimTemplates"]
    assert claims[0]["metadata"]["name"] == "data"


def test_the_provider_role_allows_exactly_the_providers_calls() -> None:
    provider = KubernetesProvider("k", "https://kubernetes.default.svc")
    # _Ops binds create/read/patch/delete per kind; read is the API's `get`
    verbs = {"read": "get", "create": "create", "patch": "patch", "delete": "delete"}
    used = {verbs[v] for ops in provider._ops.values() for v in ops._fields}
    roles = [d for _, d in OBJECTS if d["kind"] == "Role"]
    assert len(roles) == 2 and roles[0]["rules"] == roles[1]["rules"]
    for rule in roles[0]["rules"]:
        assert set(rule["verbs"]) == used
    resources = {r for rule in roles[0]["rules"] for r in rule["resources"]}
    assert resources == {"deployments", "services", "jobs"}
    [binding] = [
        d
        for _, d in OBJECTS
        if d["kind"] == "RoleBinding" and d["metadata"]["name"] == "deepfaas-controller"
    ]
    assert binding["subjects"][0] == {
        "kind": "ServiceAccount",
        "name": _pod("controller")["serviceAccountName"],
        "namespace": "deepfaas",
    }


def test_runtimes_default_to_the_platform_image() -> None:
    spec = RuntimeSpec(name="fn", function="fn", cpu=0.5, memory_mb=256)
    provider = KubernetesProvider("k", "https://kubernetes.default.svc")
    deployment = build_deployment(spec, "ns", provider.options)
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == DEFAULT_IMAGE and "envFrom" not in container
    sites = load_sites(PLATFORM / "sites.yaml")
    [cluster] = [s for s in sites.sites if s.kind is SiteKind.KUBERNETES]
    options = ProviderOptions(
        env={}, kubernetes=ManifestOptions(image="reg/deepfaas:1", env_secret="w"),
        kubernetes_ca_file="/ca.crt",
    )  # fmt: skip
    token = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    if not token.exists():  # the site reads its token file: outside a pod, point it elsewhere
        cluster = cluster.model_copy(update={"credentials": None})
    built = create_provider(cluster, options)
    assert isinstance(built, KubernetesProvider) and built.namespace == "deepfaas-runtimes"
    [container] = build_deployment(spec, "ns", built.options)["spec"]["template"]["spec"][
        "containers"
    ]
    assert container["image"] == "reg/deepfaas:1"
    assert container["envFrom"] == [{"secretRef": {"name": "w"}}]
    assert ProviderOptions().kubernetes.image == DEFAULT_IMAGE


if __name__ == "__main__":
    (PLATFORM / "nats" / "auth.conf").write_text(render_auth_conf())
