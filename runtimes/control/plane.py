"""The control plane a leading controller runs: functions' workers and deployments, one registry.

The `Controller` scales each function's workers on this machine; the `DeploymentService`
places deployments across the sites. Both use one `ProviderRegistry`, whose `local` site is
the controller's own provider (one GPU inventory for functions and deployments alike), and
both stop, with every runtime they started, when this process stops leading.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from eventbus.connection import Bus
from runtimes.control.controller import Controller
from runtimes.control.deployments import DeploymentService, provider_options
from runtimes.placement.sites import SitesFile
from runtimes.providers.local import LocalProvider
from runtimes.providers.registry import ProviderRegistry
from runtimes.settings import ControllerSettings


async def run_control_plane(
    bus: Bus, settings: ControllerSettings, provider: LocalProvider, *, env: Mapping[str, str]
) -> None:
    """Run the controller and the deployment service until cancelled; ``env`` is where the
    sites' credentials references are read (this process's environment)."""
    options = provider_options(
        settings, env=env, gpus=tuple(provider.gpus), local_env=provider.env,
        local_auth_env=provider.auth_env, local_python=provider.python,
        local_log_dir=provider.log_dir,
    )  # fmt: skip
    registry = ProviderRegistry(SitesFile.model_construct(sites=()), options)
    controller = Controller(bus, provider, settings, registry=registry)
    deployments = DeploymentService(bus, registry, settings)
    await controller.start()
    try:
        await deployments.start()
        await asyncio.Event().wait()
    finally:
        await deployments.stop()
        await controller.stop()
