"""The `kubernetes` provider: its manifests against the real schemas, its calls against kmock.

No Kubernetes API server can run here, so kmock (nolar/kmock, an in-memory emulator of the
Kubernetes API on loopback) stands in for one: the official client really creates, reads,
patches and deletes over HTTP. kmock runs no controllers, so tests patch `status` the way the
Deployment or Job controller would; it keeps no resourceVersion or generation of its own, and
it stores a created object even when a test makes it answer the create with an error.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kmock
import kubernetes.client
import kubernetes_validate
import pytest
import yaml

from runtimes.errors import CapacityError, CredentialsError, ProvisioningError, SiteConfigError
from runtimes.providers.base import Provider
from runtimes.providers.k8s_manifests import (
    ManifestOptions,
    build_deployment,
    build_manifests,
    build_service,
    dns_label,
    merge_patch,
)
from runtimes.providers.kubernetes import LAST_APPLIED, KubernetesProvider
from runtimes.types import GpuRequest, RuntimeHandle, RuntimeSpec

K8S_VERSIONS = ["1.33", "1.37"]
NS = "ml"
SITE = "k8s-test"
TOKEN = "s3cr3t-token"
INFRA = Path(__file__).resolve().parents[2] / "infra" / "kubernetes"
OPTIONS = ManifestOptions(image="ghcr.io/deepfaas/worker:0.1", nats_url="nats://nats.deepfaas:4222")
DEPLOYMENTS, SERVICES, JOBS = "apps/v1/deployments", "v1/services", "batch/v1/jobs"

CPU = RuntimeSpec(
    name="rank",
    function="rank",
    cpu=0.5,
    memory_mb=512,
    env={"LOG_LEVEL": "INFO"},
    min_scale=1,
    max_scale=4,
    concurrency=8,
    labels={"tier": "prod"},
)
GPU = RuntimeSpec(
    name="inference",
    function="inference",
    image="ghcr.io/deepfaas/inference:0.1",
    cpu=8.0,
    memory_mb=32_000,
    gpu=GpuRequest(count=2, model="a100", vendor="nvidia"),
    min_scale=1,
    labels={"model": "resnet50", "workload": "service"},
)
TRAIN = RuntimeSpec(
    name="retrain",
    function="retrain",
    cpu=16.0,
    memory_mb=64_000,
    gpu=GpuRequest(count=1, model="v100"),
    env={"EPOCHS": "10"},
    labels={"workload": "job", "model": "resnet50"},
)


def validate(manifest: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(manifest, version, strict=True)


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    [only] = manifest["spec"]["template"]["spec"]["containers"]
    return dict(only)


def env_of(manifest: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(manifest)["env"]}


# -- manifests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_cpu_manifests_validate_and_carry_the_spec(version: str) -> None:
    deployment, service = build_manifests(CPU, NS, OPTIONS)
    validate(deployment, version)
    validate(service, version)
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 1
    assert container(deployment)["image"] == "ghcr.io/deepfaas/worker:0.1"
    assert container(deployment)["resources"] == {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"memory": "512Mi"},
    }
    assert "tolerations" not in pod and "nodeSelector" not in pod and "affinity" not in pod
    assert env_of(deployment) == {
        "DEEPFAAS_FUNCTION": "rank",
        "DEEPFAAS_NATS_URL": "nats://nats.deepfaas:4222",
        "DEEPFAAS_RUNTIME": "rank",
        "DEEPFAAS_VERSION": "1",
        "LOG_LEVEL": "INFO",
        "NVIDIA_VISIBLE_DEVICES": "void",
    }
    labels = deployment["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "rank"
    assert labels["app.kubernetes.io/managed-by"] == "deepfaas"
    assert labels["deepfaas.io/function"] == "rank"
    assert labels["deepfaas.io/runtime"] == "rank"
    assert labels["tier"] == "prod"
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"][0]["targetPort"] == container(deployment)["ports"][0]["name"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_gpu_deployment_has_limit_node_selector_and_toleration(version: str) -> None:
    deployment = build_deployment(GPU, NS, OPTIONS)
    validate(deployment, version)
    pod = deployment["spec"]["template"]["spec"]
    assert container(deployment)["image"] == "ghcr.io/deepfaas/inference:0.1"
    assert container(deployment)["resources"]["limits"] == {
        "memory": "32000Mi",
        "nvidia.com/gpu": "2",
    }
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "a100"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert "NVIDIA_VISIBLE_DEVICES" not in env_of(deployment)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_gpu_model_label_is_configurable_and_aliases_become_affinity(version: str) -> None:
    options = ManifestOptions(
        image="img",
        gpu_label_key="example.org/gpu-model",
        gpu_models={
            "a100": ("NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-PCIE-40GB"),
            "t4": ("Tesla T4",),
        },
    )
    aliased = build_deployment(GPU, NS, options)
    validate(aliased, version)
    pod = aliased["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod
    required = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert required["nodeSelectorTerms"][0]["matchExpressions"] == [
        {
            "key": "example.org/gpu-model",
            "operator": "In",
            "values": ["NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-PCIE-40GB"],
        }
    ]
    t4 = build_deployment(
        GPU.model_copy(update={"gpu": GpuRequest(count=1, model="t4")}), NS, options
    )
    assert t4["spec"]["template"]["spec"]["nodeSelector"] == {"example.org/gpu-model": "Tesla-T4"}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_training_spec_builds_a_job_and_no_service(version: str) -> None:
    manifests = build_manifests(TRAIN, NS, OPTIONS)
    assert [m["kind"] for m in manifests] == ["Job"]
    job = manifests[0]
    validate(job, version)
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert job["spec"]["parallelism"] == 1 and job["spec"]["backoffLimit"] == 3
    assert container(job)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "v100"}
    assert "ports" not in container(job)


def test_the_validator_rejects_a_broken_manifest() -> None:
    deployment = build_deployment(CPU, NS, OPTIONS)
    deployment["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment, "1.33")
    service = build_service(CPU, NS, OPTIONS)
    service["spec"]["portz"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(service, "1.33")


RFC1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


@pytest.mark.parametrize(
    "name", ["rank", "a_b", "a-b", "9lives", "trailing-", "x" * 63, "y" * 80, "Upper_Case", "__"]
)
def test_names_are_rfc1035_labels(name: str) -> None:
    label = dns_label(name)
    assert RFC1035.match(label), label
    assert (label == name) == bool(RFC1035.match(name))


def test_altered_names_stay_distinct() -> None:
    names = ["a_b", "a-b", "a__b", "A_b", "x" * 70, "x" * 71]
    assert len({dns_label(n) for n in names}) == len(names)


def test_spec_problems_are_provider_errors() -> None:
    with pytest.raises(ProvisioningError, match="no image"):
        build_deployment(CPU, NS, ManifestOptions())
    bad_label = CPU.model_copy(update={"labels": {"no spaces allowed": "x"}})
    with pytest.raises(ProvisioningError, match="label key"):
        build_deployment(bad_label, NS, OPTIONS)
    amd = GPU.model_copy(update={"gpu": GpuRequest(count=1, vendor="amd")})
    with pytest.raises(CapacityError, match="amd"):
        build_deployment(amd, NS, OPTIONS)
    assert (
        "amd.com/gpu"
        in container(
            build_deployment(amd, NS, ManifestOptions(image="i", gpu_resource="amd.com/gpu"))
        )["resources"]["limits"]
    )


def test_merge_patch_sets_new_values_and_nulls_removed_keys() -> None:
    old = {"a": 1, "m": {"keep": 1, "gone": 2}, "l": [1, 2], "drop": {"x": 1}}
    new = {"a": 2, "m": {"keep": 1}, "l": [3]}
    assert merge_patch(old, new) == {"a": 2, "m": {"keep": 1, "gone": None}, "l": [3], "drop": None}


def load_infra(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((INFRA / name).read_text()) if doc]


@pytest.mark.parametrize("name", ["rbac.yaml", "example-runtimes.yaml"])
def test_infra_manifests_validate(name: str) -> None:
    docs = load_infra(name)
    assert docs
    for doc in docs:
        validate(doc, "1.33")


def test_example_runtimes_are_what_the_builders_make() -> None:
    options = ManifestOptions(
        image="ghcr.io/deepfaas/worker:0.1", nats_url="nats://nats.deepfaas:4222"
    )
    expected = [
        m for spec in (CPU, GPU, TRAIN) for m in build_manifests(spec, "deepfaas-runtimes", options)
    ]
    assert load_infra("example-runtimes.yaml") == expected


# -- the provider against kmock ----------------------------------------------------------------


@pytest.fixture
async def provider(kube: kmock.KubernetesEmulator) -> AsyncIterator[KubernetesProvider]:
    url = str(kube.url)
    p = KubernetesProvider(SITE, url, token=TOKEN, namespace=NS, options=OPTIONS, poll_s=0.02)
    yield p
    await p.close()


def stored(kube: kmock.KubernetesEmulator, resource: str, name: str) -> dict[str, Any] | None:
    key = (kmock.resource(resource), NS, name)
    if key not in kube.objects or kube.objects[key].deleted:
        return None
    return dict(kube.objects[key].raw)


async def controller_sets(
    kube: kmock.KubernetesEmulator, path: str, status: dict[str, Any]
) -> None:
    """Patch an object's status subresource over HTTP, as a controller would."""
    async with kube.patch(f"{path}/status", json={"status": status}) as response:
        assert response.status == 200


def deployment_path(name: str) -> str:
    return f"/apis/apps/v1/namespaces/{NS}/deployments/{name}"


def writes(kube: kmock.KubernetesEmulator) -> list[str]:
    return [f"{r.method.value} {r.url.path}" for r in kube if r.method.value in ("POST", "PATCH")]


async def test_provider_satisfies_the_protocol(provider: KubernetesProvider) -> None:
    assert isinstance(provider, Provider)
    assert provider.kind == "kubernetes" and provider.site == SITE


async def test_provision_creates_deployment_and_service(
    provider: KubernetesProvider, kube: kmock.KubernetesEmulator
) -> None:
    handle = await provider.provision(CPU)
    assert handle == RuntimeHandle(
        site=SITE, kind="kubernetes", name="rank", ref=f"Deployment/{NS}/rank"
    )
    deployment = stored(kube, DEPLOYMENTS, "rank")
    service = stored(kube, SERVICES, "rank")
    assert deployment is not None and service is not None
    assert deployment["spec"] == build_deployment(CPU, NS, OPTIONS)["spec"]
    assert service["spec"] == build_service(CPU, NS, OPTIONS)["spec"]
    applied = json.loads(deployment["metadata"]["annotations"][LAST_APPLIED])
    assert applied == build_deployment(CPU, NS, OPTIONS)
    assert all(r.headers.get("Authorization") == f"Bearer {TOKEN}" for r in kube)
    validate(deployment, "1.33")  # what reached the API server, annotation included


async def test_provision_twice_is_idempotent(
    provider: KubernetesProvider, kube: kmock.KubernetesEmulator
) -> None:
    first = await provider.provision(CPU)
    before = writes(kube)
    second = await provider.provision(CPU)
    assert second == first
    # The second round: each create answered 409, each object read and found current.
    assert len(before) == 2
    assert [w.split()[0] for w in writes(kube)] == ["POST", "POST", "POST", "POST"]
    assert len([r for r in kube if r.method.value == "GET"]) == 2
    assert len(kube.objects[DEPLOYMENTS, NS, "rank"].history) == 1


async def test_provision_with_a_changed_spec_patches_and_keeps_the_scale(
    provider: KubernetesProvider, kube: kmock.KubernetesEmulator
) -> None:
    handle = await provider.provision(GPU)
    await provider.scale(handle, 3)
    cpu_only = GPU.model_copy(update={"gpu": GpuRequest(), "labels": {"model": "resnet50"}})
    await provider.provision(cpu_only)
    deployment = stored(kube, DEPLOYMENTS, "inference")
    assert deployment is not None
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 3
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert container(deployment)["resources"]["limits"] == {"memory": "32000Mi"}
    assert "workload" not in deployment["metadata"]["labels"]
    assert env_of(deployment)["NVIDIA_VISIBLE_DEVICES"] == "void"
    patches = [r for r in kube if r.method.value == "PATCH"]
    assert [r.url.path.split("/")[-2] for r in patches] == [
        "deployments",
        "deployments",
        "services",
    ]
    assert {r.headers["Content-Type"] for r in patches} == {"application/merge-patch+json"}
    assert "replicas" not in patches[1].data["spec"]


async def test_status_is_not_ready_until_the_controller_says_so(
    provider: KubernetesProvider, kube: kmock.KubernetesEmulator
) -> None:
    handle = await provider.provision(CPU.model_copy(update={"min_scale": 2}))
    status = await provider.status(handle)
    assert (status.desired, status.ready, status.is_ready) == (2, 0, False)
    await controller_sets(kube, deployment_path("rank"), {"readyReplicas": 1})
    assert (await provider.status(handle)).ready == 1
    assert not (await provider.status(handle)).is_ready
    await controller_sets(kube, deployment_path("rank"), {"readyReplicas": 2})
    status = await provider.status(handle)
    assert status.is_ready and status.message == "2/2 ready"


async def test_wait_ready_returns_once_all_replicas_are_ready(
    provider: KubernetesProvider, kube: kmock.KubernetesEmulator
) -> None:
    handle = await provider.provision(CPU.model_copy(update={"min_scale": 2}))
    waiting = asyncio.create_task(provider.wait_ready(handle, timeout_s=5))
    await asyncio.sleep(0.1)
    await controller_sets(kube, deployment_path("rank"), {"readyReplicas": 1})
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await controller_sets(kube, deployment_path("rank"), {"readyReplicas": 2})
    status = await asyncio.wait_for(waiting, timeout=5)
    assert status.is_ready and status.ready == 2


async def test_wait_ready_times_out_with_the_reason(
    provider: KubernetesProvider, kube: kmock.KubernetesEmulator
) -> None:
    handle = await provider.provision(CPU)
    condition = {"type": "Available", "status": "False", "message": "0/3 nodes are available"}
    await controller_sets(kube, deployment_path("rank"), {"conditions": [condition]})
    with pytest.raises(ProvisioningError, match="0/3 nodes are available") as info:
        await provider.wait_ready(handle, timeout_s=0.1)
    assert info.value.fields["retryable"] is True
    assert info.value.fields["site"] == SITE and info.value.fields["runtime"] == "rank"


async def test_a_status_of_an_older_generation_is_not_ready(
    provider: KubernetesProvider, kube: kmock.KubernetesEmulator
) -> None:
    handle = await provider.provision(CPU)
    kube.objects[DEPLOYMENTS, NS, "rank"].patch({"metadata": {"generation": 2}})
    await controller_sets(
        kube, deployment_path("rank"), {"readyReplicas": 1, "observedGeneration": 1}
    )
    assert not (await provider.status(handle)).is_ready
    await controller_sets(kube, deployment_path("rank"), {"observedGeneration": 2})
    assert (await provider.status(handle)).is_ready


async def test_scale_patches_replicas(
    provider: KubernetesProvider, kube: kmock.KubernetesEmulator
) -> None:
    handle = await provider.provision(CPU)
    await provider.scale(handle, 4)
    deployment = stored(kube, DEPLOYMENTS, "rank")
    assert deployment is not None and deployment["spec"]["replicas"] == 4
    assert (await provider.status(handle)).desired == 4
    await provider.scale(handle, 0)
    assert (await provider.status(handle)).is_ready  # nothing desired, nothing to wait for
    with pytest.raises(ProvisioningError, match="negative"):
        await provider.scale(handle, -1)


async def test_release_deletes_both_and_twice_is_fine(
    provider: KubernetesProvider, kube: kmock.KubernetesEmulator
) -> None:
    handle = await provider.provision(CPU)
    await provider.release(handle)
    assert stored(kube, DEPLOYMENTS, "rank") is None and stored(kube, SERVICES, "rank") is None
    deletes = [r for r in kube if r.method.value == "DELETE"]
    assert {r.params.get("propagationPolicy") for r in deletes} == {"Background"}
    await provider.release(handle)
    with pytest.raises(ProvisioningError) as info:
        await provider.status(handle)
    assert info.value.fields["status"] == 404


async def test_training_runtime_is_a_job(
    provider: KubernetesProvider, kube: kmock.KubernetesEmulator
) -> None:
    handle = await provider.provision(TRAIN)
    assert handle.ref == f"Job/{NS}/retrain"
    assert stored(kube, JOBS, "retrain") is not None and stored(kube, SERVICES, "retrain") is None
    assert (await provider.provision(TRAIN)) == handle
    path = f"/apis/batch/v1/namespaces/{NS}/jobs/retrain"
    assert not (await provider.status(handle)).is_ready
    await controller_sets(kube, path, {"active": 1, "ready": 1})
    assert (await provider.status(handle)).is_ready
    await provider.scale(handle, 2)
    job = stored(kube, JOBS, "retrain")
    assert job is not None and job["spec"]["parallelism"] == 2
    complete = {"type": "Complete", "status": "True"}
    await controller_sets(kube, path, {"active": 0, "ready": 0, "conditions": [complete]})
    assert (await provider.status(handle)).message == "job complete"
    changed = TRAIN.model_copy(update={"env": {"EPOCHS": "20"}})
    with pytest.raises(ProvisioningError, match="cannot change"):
        await provider.provision(changed)
    await provider.release(handle)
    assert stored(kube, JOBS, "retrain") is None


# -- errors ------------------------------------------------------------------------------------


FORBIDDEN = 'deployments.apps is forbidden: User "x" cannot create resource "deployments"'
QUOTA = "exceeded quota: gpu-quota, requested: requests.nvidia.com/gpu=2, limited: 1"
INVALID = 'Deployment.apps "rank" is invalid: spec.replicas: Invalid value: -1'
API_ERRORS = [
    (401, "Unauthorized", "Unauthorized", CredentialsError, False),
    (403, "Forbidden", FORBIDDEN, CredentialsError, False),
    (403, "Forbidden", QUOTA, CapacityError, False),
    (422, "Invalid", INVALID, ProvisioningError, False),
    (
        400,
        "BadRequest",
        "the body of the request was in an unknown format",
        ProvisioningError,
        False,
    ),
    (429, "TooManyRequests", "too many requests", ProvisioningError, True),
    (503, "ServiceUnavailable", "etcdserver: leader changed", ProvisioningError, True),
]


@pytest.mark.parametrize(("status", "reason", "message", "error", "retryable"), API_ERRORS)
async def test_api_errors_become_provider_errors(
    provider: KubernetesProvider,
    kube: kmock.KubernetesEmulator,
    status: int,
    reason: str,
    message: str,
    error: type[Exception],
    retryable: bool,
) -> None:
    kube[f"create {DEPLOYMENTS}"] << kmock.KubernetesError(
        status=status, reason=reason, message=message
    )
    with pytest.raises(error) as info:
        await provider.provision(CPU)
    assert type(info.value) is error
    assert message in str(info.value)
    fields = info.value.fields  # type: ignore[attr-defined]
    assert fields["site"] == SITE and fields["runtime"] == "rank"
    assert fields["status"] == status and fields["retryable"] is retryable
    assert isinstance(info.value.__cause__, kubernetes.client.ApiException)


async def test_errors_of_scale_and_status_are_mapped_too(
    provider: KubernetesProvider, kube: kmock.KubernetesEmulator
) -> None:
    handle = await provider.provision(CPU)
    kube[f"fetch {DEPLOYMENTS}"] << kmock.KubernetesError(
        status=403, reason="Forbidden", message="no"
    )
    kube[f"update {DEPLOYMENTS}"] << kmock.KubernetesError(
        status=422, reason="Invalid", message="bad"
    )
    with pytest.raises(CredentialsError):
        await provider.status(handle)
    with pytest.raises(ProvisioningError, match="bad"):
        await provider.scale(handle, 2)


async def test_an_object_not_managed_by_deepfaas_is_left_alone(
    provider: KubernetesProvider, kube: kmock.KubernetesEmulator
) -> None:
    foreign = {"metadata": {"name": "rank", "namespace": NS, "labels": {"app": "theirs"}}}
    kube.objects[DEPLOYMENTS, NS, "rank"] = foreign
    with pytest.raises(ProvisioningError, match="not managed by deepfaas") as info:
        await provider.provision(CPU)
    assert info.value.fields["retryable"] is False
    assert kube.objects[DEPLOYMENTS, NS, "rank"] == foreign


async def test_an_object_being_deleted_is_a_retryable_error(
    provider: KubernetesProvider, kube: kmock.KubernetesEmulator
) -> None:
    await provider.provision(CPU)
    kube.objects[DEPLOYMENTS, NS, "rank"].patch(
        {"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}
    )
    with pytest.raises(ProvisioningError, match="being deleted") as info:
        await provider.provision(CPU)
    assert info.value.fields["retryable"] is True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_an_unreachable_api_is_a_retryable_provisioning_error() -> None:
    provider = KubernetesProvider(
        SITE, f"http://127.0.0.1:{free_port()}", options=OPTIONS, request_timeout_s=2
    )
    try:
        with pytest.raises(ProvisioningError, match="unreachable") as info:
            await provider.provision(CPU)
        assert info.value.fields["retryable"] is True and info.value.fields["site"] == SITE
    finally:
        await provider.close()


async def test_foreign_handles_and_bad_hosts_are_refused(provider: KubernetesProvider) -> None:
    with pytest.raises(ProvisioningError, match="not this provider's"):
        await provider.status(
            RuntimeHandle(
                site="elsewhere", kind="kubernetes", name="rank", ref=f"Deployment/{NS}/rank"
            )
        )
    with pytest.raises(ProvisioningError, match="not this provider's"):
        await provider.scale(
            RuntimeHandle(site=SITE, kind="kubernetes", name="rank", ref="Pod/ml/rank"), 1
        )
    with pytest.raises(SiteConfigError, match="http"):
        KubernetesProvider(SITE, "k8s.example.org:6443")
