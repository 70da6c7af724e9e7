"""The `openwhisk` provider: one OpenWhisk action per runtime, over the OpenWhisk REST API.

OpenWhisk scales actions itself (a container per concurrent activation), so `scale` only
records the asked replica count; `status` reports the action's presence, not containers.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Final
from urllib.parse import quote, urlsplit

import httpx

from runtimes.errors import (
    CapacityError,
    CredentialsError,
    ProviderError,
    ProvisioningError,
    RuntimeNotFoundError,
    SiteConfigError,
)
from runtimes.providers.gpus import Gpu
from runtimes.types import RuntimeHandle, RuntimeSpec, RuntimeStatus

log = logging.getLogger(__name__)

PYTHON_KIND: Final = "python:3"
# A stub action whose `main` calls the runtime's `module:function` (installed in the image).
_SHIM: Final = (
    "import importlib\n\n\ndef main(args):\n"
    "    handler = getattr(importlib.import_module({module!r}), {function!r})\n"
    "    return handler(args)\n"
)


class OpenWhiskProvider:
    """Creates, reads and deletes actions in one OpenWhisk namespace; invokes them."""

    kind = "openwhisk"
    gpus: tuple[Gpu, ...] = ()  # OpenWhisk runs actions where it likes

    def __init__(
        self,
        site: str,
        endpoint: str,
        *,
        auth: str,
        namespace: str = "_",
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SiteConfigError(f"API host {endpoint!r} of site {site!r} is not an http(s) URL")
        uuid, sep, key = auth.strip().partition(":")
        if not sep or not uuid or not key:
            raise CredentialsError(
                f"site {site!r}: OpenWhisk credentials must be `uuid:key`", site=site
            )
        self.site = site
        self.namespace = namespace
        self._base = f"/api/v1/namespaces/{quote(namespace, safe='')}"
        self._scale: dict[str, int] = {}
        self._http = httpx.AsyncClient(
            base_url=endpoint.rstrip("/"),
            auth=httpx.BasicAuth(uuid, key),
            timeout=timeout_s,
            transport=transport,
        )

    # -- Provider protocol ------------------------------------------------------------------

    async def provision(self, spec: RuntimeSpec, *, pending_ok: bool = False) -> RuntimeHandle:
        """Create or overwrite the action (PUT ...?overwrite=true)."""
        body = action_body(spec)
        await self._call("PUT", self._action(spec.name), spec.name, json=body,
                         params={"overwrite": "true"})  # fmt: skip
        self._scale.setdefault(spec.name, spec.min_scale)
        log.info("action %s provisioned on %s", spec.name, self.site)
        ref = f"{self.namespace}/{spec.name}"
        return RuntimeHandle(site=self.site, kind=self.kind, name=spec.name, ref=ref)

    async def status(self, handle: RuntimeHandle) -> RuntimeStatus:
        """Ready when the action exists; replicas are OpenWhisk's business (recorded scale)."""
        name = self._name(handle)
        action = await self._call("GET", self._action(name), handle.name)
        n = self._scale.get(name, 0)
        version = action.get("version", "?") if isinstance(action, dict) else "?"
        return RuntimeStatus(
            desired=n, ready=n, message=f"action version {version}; OpenWhisk scales on demand"
        )

    async def scale(self, handle: RuntimeHandle, replicas: int) -> None:
        """Record the count only: OpenWhisk starts a container per concurrent activation."""
        if replicas < 0:
            raise ProvisioningError("replicas must not be negative", site=self.site,
                                    runtime=handle.name, retryable=False)  # fmt: skip
        self._scale[self._name(handle)] = replicas
        log.info("runtime %s on %s: scale %d recorded (OpenWhisk scales itself)",
                 handle.name, self.site, replicas)  # fmt: skip

    async def release(self, handle: RuntimeHandle) -> None:
        """Delete the action; an action already gone is fine."""
        name = self._name(handle)
        with contextlib.suppress(RuntimeNotFoundError):
            await self._call("DELETE", self._action(name), handle.name)
        self._scale.pop(name, None)
        log.info("action %s released on %s", name, self.site)

    # -- beyond the protocol ----------------------------------------------------------------

    async def invoke(
        self, name: str, params: dict[str, Any] | None = None, *, blocking: bool = True,
        result: bool = False,
    ) -> Any:  # fmt: skip
        """Invoke an action: the activation (blocking), its result (`result`), or its id."""
        query = {"blocking": str(blocking).lower(), "result": str(result).lower()}
        return await self._call("POST", self._action(name), name, json=params or {},
                                params=query)  # fmt: skip

    async def get_activation(self, activation_id: str) -> dict[str, Any]:
        """One activation record by its id."""
        path = f"{self._base}/activations/{quote(activation_id, safe='')}"
        found: dict[str, Any] = await self._call("GET", path, activation_id)
        return found

    async def close(self) -> None:
        """Close the HTTP connection pool."""
        await self._http.aclose()

    # -- internals --------------------------------------------------------------------------

    def _action(self, name: str) -> str:
        return f"{self._base}/actions/{quote(name, safe='')}"

    def _name(self, handle: RuntimeHandle) -> str:
        namespace, _, name = handle.ref.partition("/")
        if handle.site != self.site or namespace != self.namespace or not name:
            raise ProvisioningError(
                f"handle {handle.ref!r} of site {handle.site!r} is not this provider's",
                site=self.site, runtime=handle.name, retryable=False,
            )  # fmt: skip
        return name

    async def _call(self, method: str, path: str, runtime: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ProvisioningError(
                f"OpenWhisk API of site {self.site!r} unreachable: {type(exc).__name__}: {exc}",
                site=self.site, runtime=runtime, retryable=True,
            ) from exc  # fmt: skip
        # A non-blocking invoke answers 202; a blocking one past its wait 202 with the id too.
        if response.is_success:
            return response.json() if response.content else None
        raise self._error(response, runtime)

    def _error(self, response: httpx.Response, runtime: str) -> ProviderError:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = {}
        reason = (body.get("error") if isinstance(body, dict) else None) or response.reason_phrase
        text = f"OpenWhisk API of site {self.site!r} answered {status}: {reason}"
        fields: dict[str, Any] = {"site": self.site, "runtime": runtime, "status": status}
        if isinstance(body, dict) and body.get("code"):
            fields["request"] = str(body["code"])
        if status in (401, 403):
            return CredentialsError(text, **fields, retryable=False)
        if status == 404:
            return RuntimeNotFoundError(text, **fields, retryable=False)
        if status == 429:
            return CapacityError(text, **fields, retryable=True)
        return ProvisioningError(text, **fields, retryable=status >= 500)


def action_body(spec: RuntimeSpec) -> dict[str, Any]:
    """The action document for a runtime: code (a shim to its handler) or a container image."""
    if spec.image and not spec.module:
        exec_: dict[str, Any] = {"kind": "blackbox", "image": spec.image}
    elif spec.module:
        module, _, function = spec.module.partition(":")
        exec_ = {"kind": PYTHON_KIND, "code": _SHIM.format(module=module, function=function),
                 "main": "main"}  # fmt: skip
        if spec.image:
            exec_ = {**exec_, "kind": "blackbox", "image": spec.image}
    else:
        raise ProvisioningError(
            f"runtime {spec.name!r} has neither a module nor an image", runtime=spec.name,
            retryable=False,
        )  # fmt: skip
    annotations = [{"key": "deepfaas-runtime", "value": spec.name},
                   {"key": "deepfaas-function", "value": spec.function},
                   {"key": "deepfaas-version", "value": spec.function_version}]  # fmt: skip
    annotations += [{"key": f"label:{k}", "value": v} for k, v in sorted(spec.labels.items())]
    return {
        "namespace": "_",
        "name": spec.name,
        "exec": exec_,
        "parameters": [{"key": k, "value": v, "init": True} for k, v in sorted(spec.env.items())],
        "annotations": annotations,
        "limits": {"memory": spec.memory_mb, "concurrency": spec.concurrency},
        "publish": False,
    }


__all__ = ["OpenWhiskProvider", "action_body"]
