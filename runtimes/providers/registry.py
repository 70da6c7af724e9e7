"""Providers built from the sites file: one `Provider` per site, with its credentials resolved."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from runtimes.errors import SiteConfigError
from runtimes.placement.sites import (
    Site,
    SiteKind,
    SitesFile,
    resolve_credentials,
    with_discovered_gpus,
)
from runtimes.providers.base import Provider, WorkerHost
from runtimes.providers.gpus import Gpu
from runtimes.providers.k8s_manifests import DEFAULT_IMAGE, ManifestOptions
from runtimes.providers.local import LocalProvider

log = logging.getLogger(__name__)

#: site label naming the Kubernetes namespace / OpenWhisk namespace a site's runtimes go in
NAMESPACE_LABEL = "namespace"


@dataclass(frozen=True)
class ProviderOptions:
    """What building providers needs beside the sites: where secrets are, this machine's GPUs."""

    env: Mapping[str, str] = field(default_factory=dict)
    secrets_dir: Path | None = None
    #: GPUs of this machine (None: ask nvidia-smi when a local site declares none)
    local_gpus: tuple[Gpu, ...] | None = None
    #: env, bus credentials by function (`LocalProvider.auth_env`), python and log dir of the
    #: workers a `local` site starts
    local_env: Mapping[str, str] = field(default_factory=dict)
    local_auth_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    local_python: str | None = None
    local_log_dir: Path | None = None
    #: the worker budgets of a `local` site (`LocalProvider`; None: its defaults)
    local_max_workers: int | None = None
    namespace_max_workers: int | None = None
    request_timeout_s: float = 10.0
    #: what `kubernetes` sites run a spec that names no image with, and how workers there
    #: reach the bus (`runtimes.providers.k8s_manifests.ManifestOptions`)
    kubernetes: ManifestOptions = field(default_factory=lambda: ManifestOptions(DEFAULT_IMAGE))
    #: CA bundle of the Kubernetes API servers (in a pod: the service account's ca.crt)
    kubernetes_ca_file: str | None = None


def declared_gpus(site: Site) -> list[Gpu]:
    """A local site's declared GPUs as an inventory (indexes in declaration order)."""
    gpus: list[Gpu] = []
    for entry in site.capacity.gpus:
        start = len(gpus)
        gpus.extend(Gpu(start + i, entry.model, 0) for i in range(entry.count))
    return gpus


def create_provider(site: Site, options: ProviderOptions) -> Provider:
    """The provider of one site; `CredentialsError` when its secret cannot be read."""
    if site.kind is SiteKind.LOCAL:
        gpus = declared_gpus(site) or (
            list(options.local_gpus) if options.local_gpus is not None else None
        )
        return LocalProvider(
            site.name, env=dict(options.local_env), gpus=gpus, auth_env=options.local_auth_env,
            python=options.local_python, log_dir=options.local_log_dir,
            max_workers=options.local_max_workers,
            namespace_max_workers=options.namespace_max_workers,
        )  # fmt: skip
    secret = resolve_credentials(site, options.env, options.secrets_dir)
    endpoint = site.endpoint or ""
    if site.kind is SiteKind.KUBERNETES:
        from runtimes.providers.kubernetes import KubernetesProvider

        return KubernetesProvider(
            site.name, endpoint, token=secret,
            namespace=site.labels.get(NAMESPACE_LABEL, "default"),
            ca_file=options.kubernetes_ca_file, options=options.kubernetes,
            request_timeout_s=options.request_timeout_s,
        )  # fmt: skip
    if site.kind is SiteKind.OPENWHISK:
        from runtimes.providers.openwhisk import OpenWhiskProvider

        return OpenWhiskProvider(
            site.name, endpoint, auth=secret or "",
            namespace=site.labels.get(NAMESPACE_LABEL, "_"),
            timeout_s=options.request_timeout_s,
        )  # fmt: skip
    raise SiteConfigError(f"site {site.name!r}: no provider for kind {site.kind!r}")


class ProviderRegistry:
    """Builds each site's provider on first use and keeps it (its runtimes live in it)."""

    def __init__(self, sites: SitesFile, options: ProviderOptions | None = None) -> None:
        self.sites = sites
        self.options = options or ProviderOptions()
        self._providers: dict[str, Provider] = {}
        self._pinned: set[str] = set()  # built elsewhere (`add`): kept whatever the file says

    def site(self, name: str) -> Site:
        """The site of that name, local GPUs included; `SiteConfigError` if unknown."""
        site = self.sites.get(name)
        if site is None:
            raise SiteConfigError(f"no site {name!r} in the sites file", site=name)
        if site.kind is SiteKind.LOCAL and not site.capacity.gpus:
            provider = self._providers.get(name)
            gpus = (provider.gpus if provider is not None else None) or self.options.local_gpus
            if gpus:
                return with_discovered_gpus(site, gpus)
        return site

    def all_sites(self) -> list[Site]:
        """Every site as placement sees it."""
        return [self.site(s.name) for s in self.sites.sites]

    def get(self, name: str) -> Provider:
        """The provider of a site (built now if needed)."""
        found = self._providers.get(name)
        if found is None:
            found = create_provider(self.site(name), self.options)
            self._providers[name] = found
            log.info("provider for site %s (%s) ready", name, found.kind)
        return found

    async def update_sites(self, sites: SitesFile) -> None:
        """Take a changed sites file: the provider of a site whose entry changed or went is
        closed (its runtimes released; reconcile places them again), the others are kept."""
        old = {s.name: s for s in self.sites.sites}
        new = {s.name: s for s in sites.sites}
        self.sites = sites
        changed = [n for n in self._providers if n in old and new.get(n) != old[n]]
        for name in [n for n in changed if n not in self._pinned]:
            await self._close(self._providers.pop(name))

    def mark_ready(self, pid: int) -> None:
        """Relay a worker's `control.ready`/`control.stem` announcement to the local providers."""
        for provider in self._providers.values():
            if isinstance(provider, WorkerHost):
                provider.mark_ready(pid)

    def add(self, name: str, provider: Provider) -> None:
        """Use this provider for a site (tests, or a provider built elsewhere: the controller's
        own `local` one, so functions and deployments share this machine's GPUs)."""
        self._providers[name] = provider
        self._pinned.add(name)

    async def close(self) -> None:
        """Close every provider that can be closed."""
        for provider in self._providers.values():
            await self._close(provider)
        self._providers.clear()

    @staticmethod
    async def _close(provider: Provider) -> None:
        try:
            await provider.close()
        except Exception as exc:  # closing is best effort: the others are still closed
            log.warning("closing provider %s: %s", provider.site, exc)
