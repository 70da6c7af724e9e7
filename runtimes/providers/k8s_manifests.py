"""Kubernetes objects for a runtime: pure builders from a `RuntimeSpec` to camelCase dicts."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from runtimes.errors import CapacityError, ProvisioningError
from runtimes.types import RuntimeSpec

MANAGED_BY: Final = "deepfaas"
RUNTIME_LABEL: Final = "deepfaas.io/runtime"
FUNCTION_LABEL: Final = "deepfaas.io/function"
# The label `runtimes.placement.tosca` sets on a spec; "job" asks for a Job instead of a Deployment.
WORKLOAD_LABEL: Final = "workload"
JOB_WORKLOAD: Final = "job"
CONTAINER_NAME: Final = "worker"
GPU_RESOURCES: Final = {"nvidia": "nvidia.com/gpu", "amd": "amd.com/gpu"}
#: the platform image (`Containerfile`): gateway, controller and the worker runtime; the
#: `kubernetes` provider runs a spec that names no image with it (`DEEPFAAS_KUBERNETES_IMAGE`)
DEFAULT_IMAGE: Final = "ghcr.io/deepfaas/deepfaas:0.1.0"

_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@dataclass(frozen=True)
class ManifestOptions:
    """Per-site choices the spec does not carry: default image, bus URL, GPU labels."""

    image: str | None = None
    nats_url: str = "nats://nats:4222"
    gpu_resource: str = "nvidia.com/gpu"
    gpu_label_key: str = "nvidia.com/gpu.product"
    # spec.gpu.model -> node label values (e.g. "a100" -> "NVIDIA-A100-SXM4-80GB").
    gpu_models: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    command: tuple[str, ...] = ("python", "-m", "runtimes")
    #: a Secret in the runtimes' namespace whose keys become the worker's environment (its
    #: bus credentials: DEEPFAAS_NATS_USER, DEEPFAAS_NATS_PASSWORD, DEEPFAAS_NATS_INBOX_PREFIX)
    env_secret: str | None = None
    port: int = 8080
    termination_grace_s: int = 35
    job_backoff_limit: int = 3


def dns_label(value: str, max_length: int = 63) -> str:
    """`value` as an RFC 1035 label; a hash suffix keeps altered or shortened names unique."""
    candidate = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-")
    if candidate and not candidate[0].isalpha():
        candidate = f"rt-{candidate}"
    if candidate == value and len(candidate) <= max_length:
        return candidate
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    head = candidate[: max_length - len(digest) - 1].rstrip("-") or "rt"
    return f"{head}-{digest}"


def label_value(value: str) -> str:
    """`value` made a valid label value (at most 63 characters, alphanumeric at both ends)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", cleaned)


def is_job(spec: RuntimeSpec) -> bool:
    """Whether the spec asks for a run-to-completion Job (training) rather than a Deployment."""
    return spec.labels.get(WORKLOAD_LABEL) == JOB_WORKLOAD


def runtime_labels(spec: RuntimeSpec) -> dict[str, str]:
    """The spec's labels (checked) plus the ones deepfaas manages, which win."""
    labels: dict[str, str] = {}
    for key, value in spec.labels.items():
        prefix, _, name = key.rpartition("/")
        if not _LABEL_NAME.fullmatch(name) or (prefix and not _LABEL_PREFIX.fullmatch(prefix)):
            raise ProvisioningError(
                f"label key {key!r} is not a valid Kubernetes label key",
                runtime=spec.name,
                retryable=False,
            )
        labels[key] = label_value(value)
    name = dns_label(spec.name)
    return {
        **labels,
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": CONTAINER_NAME,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        FUNCTION_LABEL: label_value(spec.function),
        RUNTIME_LABEL: name,
    }


def _metadata(spec: RuntimeSpec, namespace: str) -> dict[str, Any]:
    return {
        "name": dns_label(spec.name),
        "namespace": namespace,
        "labels": runtime_labels(spec),
        "annotations": {
            "deepfaas.io/function-version": str(spec.function_version),
            "deepfaas.io/max-scale": str(spec.max_scale),
            "deepfaas.io/concurrency": str(spec.concurrency),
        },
    }


def _gpu_resource(spec: RuntimeSpec, options: ManifestOptions) -> str:
    vendor = (spec.gpu.vendor or "").lower()
    if vendor and GPU_RESOURCES.get(vendor) != options.gpu_resource:
        raise CapacityError(
            f"GPUs of vendor {spec.gpu.vendor!r} asked; the site offers {options.gpu_resource}",
            runtime=spec.name,
            retryable=False,
        )
    return options.gpu_resource


def _env(spec: RuntimeSpec, options: ManifestOptions) -> list[dict[str, str]]:
    env = dict(spec.env)
    if spec.gpu.count == 0:
        # CUDA base images set NVIDIA_VISIBLE_DEVICES=all; on nodes whose default runtime is
        # nvidia's, a pod without a GPU limit would otherwise see every GPU of the node.
        env["NVIDIA_VISIBLE_DEVICES"] = "void"
    env |= {
        "DEEPFAAS_FUNCTION": spec.function,
        "DEEPFAAS_VERSION": str(spec.function_version),
        "DEEPFAAS_NATS_URL": options.nats_url,
        "DEEPFAAS_RUNTIME": spec.name,
    }
    return [{"name": key, "value": env[key]} for key in sorted(env)]


def _pod_spec(spec: RuntimeSpec, options: ManifestOptions, *, job: bool) -> dict[str, Any]:
    image = spec.image or options.image
    if not image:
        raise ProvisioningError(
            "the spec names no image and the site has no default image",
            runtime=spec.name,
            retryable=False,
        )
    memory = f"{spec.memory_mb}Mi"
    resources: dict[str, dict[str, str]] = {
        "requests": {"cpu": f"{max(1, round(spec.cpu * 1000))}m", "memory": memory},
        "limits": {"memory": memory},
    }
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "command": list(options.command),
        "env": _env(spec, options),
        "resources": resources,
        "securityContext": {"allowPrivilegeEscalation": False},
    }
    if options.env_secret:
        container["envFrom"] = [{"secretRef": {"name": options.env_secret}}]
    if not job:
        container["ports"] = [{"name": "http", "containerPort": options.port, "protocol": "TCP"}]
    pod: dict[str, Any] = {
        "containers": [container],
        "restartPolicy": "Never" if job else "Always",
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": options.termination_grace_s,
    }
    if spec.gpu.count > 0:
        gpu = _gpu_resource(spec, options)
        resources["limits"][gpu] = str(spec.gpu.count)
        pod["tolerations"] = [{"key": gpu, "operator": "Exists", "effect": "NoSchedule"}]
        if spec.gpu.model:
            values = options.gpu_models.get(spec.gpu.model) or (spec.gpu.model.replace(" ", "-"),)
            if len(values) == 1:
                pod["nodeSelector"] = {options.gpu_label_key: label_value(values[0])}
            else:
                term = {"key": options.gpu_label_key, "operator": "In", "values": list(values)}
                required = {"nodeSelectorTerms": [{"matchExpressions": [term]}]}
                pod["affinity"] = {
                    "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}
                }
    return pod


def _template(spec: RuntimeSpec, options: ManifestOptions, *, job: bool) -> dict[str, Any]:
    return {
        "metadata": {"labels": runtime_labels(spec)},
        "spec": _pod_spec(spec, options, job=job),
    }


def build_deployment(
    spec: RuntimeSpec, namespace: str, options: ManifestOptions | None = None
) -> dict[str, Any]:
    """An apps/v1 Deployment running the spec's workers, `min_scale` replicas to start."""
    options = options or ManifestOptions()
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(spec, namespace),
        "spec": {
            "replicas": spec.min_scale,
            "selector": {"matchLabels": {RUNTIME_LABEL: dns_label(spec.name)}},
            "template": _template(spec, options, job=False),
        },
    }


def build_service(
    spec: RuntimeSpec, namespace: str, options: ManifestOptions | None = None
) -> dict[str, Any]:
    """A ClusterIP Service in front of the runtime's pods (their `http` port)."""
    options = options or ManifestOptions()
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, namespace),
        "spec": {
            "type": "ClusterIP",
            "selector": {RUNTIME_LABEL: dns_label(spec.name)},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def build_job(
    spec: RuntimeSpec, namespace: str, options: ManifestOptions | None = None
) -> dict[str, Any]:
    """A batch/v1 Job (training): `max(min_scale, 1)` pods at once, retried `backoffLimit` times."""
    options = options or ManifestOptions()
    parallelism = max(spec.min_scale, 1)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(spec, namespace),
        "spec": {
            "parallelism": parallelism,
            "completions": parallelism,
            "backoffLimit": options.job_backoff_limit,
            "template": _template(spec, options, job=True),
        },
    }


def build_manifests(
    spec: RuntimeSpec, namespace: str, options: ManifestOptions | None = None
) -> list[dict[str, Any]]:
    """Every object of a runtime, workload first: Deployment and Service, or a Job."""
    if is_job(spec):
        return [build_job(spec, namespace, options)]
    return [build_deployment(spec, namespace, options), build_service(spec, namespace, options)]


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """An RFC 7386 merge patch from `old` to `new`: `new` in full, null for each removed key."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            patch[key] = merge_patch(before, value)
        else:
            patch[key] = value
    return patch
