"""The `kubernetes` provider: a Deployment and Service (or a Job) per runtime on one cluster."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Container
from typing import Any, Final, NamedTuple
from urllib.parse import urlsplit

import urllib3.exceptions
from kubernetes import client as k8s

from runtimes.errors import (
    CapacityError,
    CredentialsError,
    ProviderError,
    ProvisioningError,
    SiteConfigError,
)
from runtimes.providers.base import wait_ready
from runtimes.providers.gpus import Gpu
from runtimes.providers.k8s_manifests import (
    DEFAULT_IMAGE,
    MANAGED_BY,
    ManifestOptions,
    build_manifests,
    merge_patch,
)
from runtimes.types import RuntimeHandle, RuntimeSpec, RuntimeStatus

log = logging.getLogger(__name__)

LAST_APPLIED: Final = "deepfaas.io/last-applied"
MERGE_PATCH: Final = "application/merge-patch+json"


class _Ops(NamedTuple):
    create: Callable[..., Any]
    read: Callable[..., Any]
    patch: Callable[..., Any]
    delete: Callable[..., Any]


class KubernetesProvider:
    """Runs each runtime as a Deployment and a Service (a Job for training) in one namespace."""

    kind = "kubernetes"
    gpus: tuple[Gpu, ...] = ()  # the cluster schedules its GPUs (nvidia.com/gpu limits)

    def __init__(
        self,
        site: str,
        host: str,
        *,
        token: str | None = None,
        namespace: str = "default",
        ca_file: str | None = None,
        verify_tls: bool = True,
        options: ManifestOptions | None = None,
        request_timeout_s: float = 10.0,
        poll_s: float = 1.0,
    ) -> None:
        parts = urlsplit(host)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SiteConfigError(f"API host {host!r} of site {site!r} is not an http(s) URL")
        self.site = site
        self.namespace = namespace
        self.options = options or ManifestOptions(image=DEFAULT_IMAGE)
        self.request_timeout_s = request_timeout_s
        self.poll_s = poll_s
        config = k8s.Configuration(host=host.rstrip("/"))
        if token is not None:
            config.api_key = {"BearerToken": token.strip()}
            config.api_key_prefix = {"BearerToken": "Bearer"}
        config.verify_ssl = verify_tls
        config.ssl_ca_cert = ca_file
        self._api: Any = k8s.ApiClient(config)
        apis = {
            "Deployment": (k8s.AppsV1Api, "deployment"),
            "Service": (k8s.CoreV1Api, "service"),
            "Job": (k8s.BatchV1Api, "job"),
        }
        self._ops: dict[str, _Ops] = {
            kind: _Ops(
                *(getattr(api(self._api), f"{verb}_namespaced_{noun}") for verb in _Ops._fields)
            )
            for kind, (api, noun) in apis.items()
        }

    # -- Provider protocol ------------------------------------------------------------------

    async def provision(self, spec: RuntimeSpec, *, pending_ok: bool = False) -> RuntimeHandle:
        """Create the runtime's objects, or bring existing ones to the spec (keeping the scale).

        Pods that wait for capacity stay Pending in the cluster whatever ``pending_ok`` says."""
        try:
            manifests = build_manifests(spec, self.namespace, self.options)
        except ProviderError as exc:
            exc.fields.setdefault("site", self.site)
            raise
        for manifest in manifests:
            await self._apply(manifest, spec.name)
        workload = manifests[0]
        ref = f"{workload['kind']}/{self.namespace}/{workload['metadata']['name']}"
        log.info("runtime %s provisioned on %s as %s", spec.name, self.site, ref)
        return RuntimeHandle(site=self.site, kind=self.kind, name=spec.name, ref=ref)

    async def status(self, handle: RuntimeHandle) -> RuntimeStatus:
        """Desired and ready replicas, read from the Deployment (or Job) status."""
        kind, name = self._target(handle)
        obj = await self._call(self._ops[kind].read, name, self.namespace, runtime=handle.name)
        spec, state = obj.get("spec") or {}, obj.get("status") or {}
        if kind == "Job":
            return _job_status(spec, state)
        desired = int(spec.get("replicas") or 0)
        ready = int(state.get("readyReplicas") or 0)
        generation = obj.get("metadata", {}).get("generation")
        observed = state.get("observedGeneration")
        if generation is not None and (observed is None or observed < generation):
            # The status still describes an older spec: its ready pods may be the old ones.
            return RuntimeStatus(desired=desired, ready=0, message="rollout not yet observed")
        problems = [
            c.get("message") or c.get("reason") or c.get("type", "")
            for c in state.get("conditions") or []
            if c.get("status") == "False"
        ]
        return RuntimeStatus(
            desired=desired, ready=ready, message="; ".join(problems) or f"{ready}/{desired} ready"
        )

    async def scale(self, handle: RuntimeHandle, replicas: int) -> None:
        """Patch the Deployment's replicas (a Job's parallelism)."""
        if replicas < 0:
            raise ProvisioningError(
                "replicas must not be negative",
                site=self.site,
                runtime=handle.name,
                retryable=False,
            )
        kind, name = self._target(handle)
        field = "parallelism" if kind == "Job" else "replicas"
        body = {"spec": {field: replicas}}
        patch = self._ops[kind].patch
        await self._call(
            patch, name, self.namespace, body, _content_type=MERGE_PATCH, runtime=handle.name
        )
        log.info("runtime %s on %s scaled to %d", handle.name, self.site, replicas)

    async def release(self, handle: RuntimeHandle) -> None:
        """Delete the runtime's objects and, in the background, their pods; gone is fine."""
        kind, name = self._target(handle)
        # batch/v1 Jobs default to orphaning their pods; ask for background deletion always.
        for each in (kind, "Service") if kind == "Deployment" else (kind,):
            delete = self._ops[each].delete
            await self._call(
                delete,
                name,
                self.namespace,
                propagation_policy="Background",
                runtime=handle.name,
                ok=(404,),
            )
        log.info("runtime %s released on %s", handle.name, self.site)

    # -- beyond the protocol ----------------------------------------------------------------

    async def wait_ready(self, handle: RuntimeHandle, timeout_s: float) -> RuntimeStatus:
        """Poll `status` until the runtime is ready (`runtimes.providers.base.wait_ready`)."""
        return await wait_ready(self, handle, timeout_s, poll_s=self.poll_s)

    async def close(self) -> None:
        """Close the API client's connection pool."""
        await asyncio.to_thread(self._api.close)

    # -- internals --------------------------------------------------------------------------

    def _target(self, handle: RuntimeHandle) -> tuple[str, str]:
        kind, _, rest = handle.ref.partition("/")
        namespace, _, name = rest.partition("/")
        if handle.site != self.site or kind not in self._ops or namespace != self.namespace:
            raise ProvisioningError(
                f"handle {handle.ref!r} of site {handle.site!r} is not this provider's",
                site=self.site,
                runtime=handle.name,
                retryable=False,
            )
        return kind, name

    async def _apply(self, manifest: dict[str, Any], runtime: str) -> None:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        applied = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
        desired = {**manifest, "metadata": dict(manifest["metadata"])}
        desired["metadata"]["annotations"] = {
            **manifest["metadata"]["annotations"],
            LAST_APPLIED: applied,
        }
        ops = self._ops[kind]
        created = await self._call(ops.create, self.namespace, desired, runtime=runtime, ok=(409,))
        if created is not None:
            log.info("created %s %s/%s on %s", kind, self.namespace, name, self.site)
            return
        existing = await self._call(ops.read, name, self.namespace, runtime=runtime)
        meta = existing.get("metadata") or {}
        fields = {"site": self.site, "runtime": runtime, "object": f"{kind}/{name}"}
        if meta.get("deletionTimestamp"):
            raise ProvisioningError(
                f"{kind} {name} is still being deleted", **fields, retryable=True
            )
        if (meta.get("labels") or {}).get("app.kubernetes.io/managed-by") != MANAGED_BY:
            raise ProvisioningError(
                f"{kind} {name} exists and is not managed by {MANAGED_BY}",
                **fields,
                retryable=False,
            )
        previous = json.loads((meta.get("annotations") or {}).get(LAST_APPLIED) or "{}")
        if previous == manifest:
            return
        if kind == "Job":
            raise ProvisioningError(
                f"Job {name} exists with another spec (a Job's template cannot change); release it",
                **fields,
                retryable=False,
            )
        patch = merge_patch(previous, desired)
        patch.get("spec", {}).pop("replicas", None)  # keep the scale the runtime has now
        await self._call(
            ops.patch, name, self.namespace, patch, _content_type=MERGE_PATCH, runtime=runtime
        )
        log.info("updated %s %s/%s on %s", kind, self.namespace, name, self.site)

    async def _call(
        self,
        fn: Callable[..., Any],
        *args: Any,
        runtime: str,
        ok: Container[int] = (),
        **kwargs: Any,
    ) -> Any:
        """Run one API call in a thread; its JSON body, None for an `ok` status, else our error."""
        kwargs |= {"_preload_content": False, "_request_timeout": self.request_timeout_s}
        try:
            response = await asyncio.to_thread(fn, *args, **kwargs)
        except k8s.ApiException as exc:
            if exc.status in ok:
                return None
            raise self._api_error(exc, runtime) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ProvisioningError(
                f"Kubernetes API of site {self.site!r} unreachable: {exc}",
                site=self.site,
                runtime=runtime,
                retryable=True,
            ) from exc
        return json.loads(response.data or b"{}")

    def _api_error(self, exc: Any, runtime: str) -> ProviderError:
        status: int = exc.status or 0
        try:
            body = json.loads(exc.body or b"{}")
        except (TypeError, ValueError):
            body = {}
        reason = body.get("reason") or exc.reason or ""
        message = body.get("message") or str(reason) or f"HTTP {status}"
        fields = {"site": self.site, "runtime": runtime, "status": status, "reason": reason}
        text = f"Kubernetes API of site {self.site!r} answered {status}: {message}"
        if status == 0:  # the client's own failure before any answer, e.g. a TLS handshake
            text = f"request to the Kubernetes API of site {self.site!r} failed: {message}"
        if status == 403 and "exceeded quota" in message:
            return CapacityError(text, **fields, retryable=False)
        if status in (401, 403):
            return CredentialsError(text, **fields, retryable=False)
        return ProvisioningError(text, **fields, retryable=status == 429 or status >= 500)


def _job_status(spec: dict[str, Any], state: dict[str, Any]) -> RuntimeStatus:
    conditions = {
        c.get("type"): c for c in state.get("conditions") or [] if c.get("status") == "True"
    }
    if "Complete" in conditions:
        return RuntimeStatus(desired=0, ready=0, message="job complete")
    desired = int(spec.get("parallelism") or 1)
    if "Failed" in conditions:
        failed = conditions["Failed"]
        return RuntimeStatus(
            desired=desired,
            ready=0,
            message=f"job failed: {failed.get('message') or failed.get('reason')}",
        )
    # status.ready (1.24+) counts pods that passed readiness; older servers only report active.
    ready = state.get("ready")
    ready = int(state.get("active") or 0) if ready is None else int(ready)
    return RuntimeStatus(desired=desired, ready=ready, message=f"{ready}/{desired} running")


__all__ = ["KubernetesProvider", "ManifestOptions"]
