"""`deepfaas up` and the split-mode parts: each command starts a process the gateway package
(`gateway/up.py`) or the bus package composes; nothing here runs before the command is chosen."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer


def _log_to_stderr() -> None:
    import logging

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def up(
    nats_cluster: Annotated[
        int | None,
        typer.Option(
            "--nats-cluster",
            min=1,
            max=9,
            help="start this many clustered nats-servers on loopback (3: try a cluster, every "
            "stream R3); the setting DEEPFAAS_NATS_CLUSTER",
        ),
    ] = None,
) -> None:
    """Start the whole platform here: nats-server, controller, workers, gateway (Ctrl-C stops)."""
    from gateway.up import main_up

    if nats_cluster is not None:
        os.environ["DEEPFAAS_NATS_CLUSTER"] = str(nats_cluster)  # read with the other settings
    main_up()


def storage_bridge() -> None:
    """Run only the storage bridge (MinIO's notifications, or SeaweedFS's filer log)."""
    from gateway.storage_settings import storage_bridge_command

    storage_bridge_command()


def gateway() -> None:
    """Run only the gateway (DEEPFAAS_NATS_URL names the bus)."""
    from eventbus import loop as event_loop
    from gateway.settings import GatewaySettings
    from gateway.up import run_gateway

    _log_to_stderr()
    settings = GatewaySettings()
    event_loop.run(run_gateway(settings), uvloop=settings.uvloop)


def controller() -> None:
    """Run only the controller with the local provider (DEEPFAAS_NATS_URL names the bus)."""
    from eventbus import loop as event_loop
    from gateway.settings import GatewaySettings
    from gateway.up import UpSettings, run_controller, until_stopped, worker_env
    from runtimes.settings import ControllerSettings

    _log_to_stderr()
    settings = ControllerSettings()
    env = worker_env(
        GatewaySettings(nats_url=settings.nats_url, event_prefix=settings.event_prefix)
    )
    trusted = UpSettings().trusted_functions.split(",")
    event_loop.run(
        until_stopped(run_controller(settings, env, Path(settings.state_dir) / "logs", trusted)),
        uvloop=settings.uvloop,
    )


def dispatcher() -> None:
    """Run only the trigger dispatcher (DEEPFAAS_NATS_URL names the bus)."""
    import asyncio
    import contextlib

    from eventbus.dispatcher import run_dispatcher
    from eventbus.schedules import create_clock
    from eventbus.settings import BusSettings

    _log_to_stderr()
    settings = BusSettings()
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C stops it; the dispatcher cleans up
        asyncio.run(
            run_dispatcher(
                settings.nats_url,
                prefix=settings.event_prefix,
                ack_wait=settings.ack_wait_s,
                freeze_gc=True,
                auth=settings.bus_auth("dispatcher"),
                clock=create_clock(settings.schedule_clock),
                schedule_grace_s=settings.schedule_grace_s,
            )
        )


def deliverer() -> None:
    """Run only the subscriptions' deliverer (DEEPFAAS_NATS_URL names the bus)."""
    import asyncio
    import contextlib

    from gateway.settings import GatewaySettings
    from gateway.up import run_deliverer, settings_or_exit, until_stopped

    _log_to_stderr()
    settings = settings_or_exit(GatewaySettings)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(until_stopped(run_deliverer(settings)))


def bootstrap() -> None:
    """Declare the bus layout, register the built-ins and print a first API key (as `admin`)."""
    import asyncio

    from gateway.up import UpSettings, bootstrap_bus, settings_or_exit

    settings = settings_or_exit(UpSettings)
    key = asyncio.run(bootstrap_bus(settings))
    if key is None:
        print(f"the bus is ready; the key in {settings.data_dir / 'auth'} still works")
    else:
        print(f"the bus is ready; API key of namespace 'default' (shown once):\n{key}")
