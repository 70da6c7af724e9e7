"""Storage settings (a mixin of the gateway's settings), the backend factory, the bridge runner.

``storage_backend`` is ``local`` (a directory, ``<data_dir>/storage`` unless ``storage_root``)
or ``s3`` (any S3 endpoint; keys from ``DEEPFAAS_STORAGE_S3_ACCESS_KEY`` and
``DEEPFAAS_STORAGE_S3_SECRET_KEY``). ``storage_events`` says who emits the
storage events: ``platform`` (the gateway, after each write or delete through it) or
``bridge`` (MinIO's NATS notifications through the MinIO bridge; the gateway emits none, so
an upload is announced once). With ``seaweedfs`` the bridge follows the filer's metadata log
(`eventbus.seaweed_bridge`), and `deepfaas up` starts its own SeaweedFS unless given one.
"""

from __future__ import annotations

import asyncio

from pydantic import SecretStr

from eventbus.buckets import BucketOwners
from eventbus.connection import Bus
from eventbus.credentials import BusAuth
from eventbus.minio_bridge import (
    MinioBridge,
    StorageReconciler,
)
from eventbus.storage.errors import StorageUnavailableError
from eventbus.storage.seaweedfs import EmbeddedSeaweed, find_weed
from eventbus.storage.settings import StorageSettings, create_storage
from eventbus.storage_events import StorageLedger
from eventbus.streams import Layout, ensure_layout


def gateway_emits_events(settings: StorageSettings) -> bool:
    """Whether the gateway announces the writes and deletes made through it."""
    return settings.storage_events == "platform"


async def run_storage_bridge(
    settings: StorageSettings,
    nats_url: str,
    event_prefix: str,
    *,
    auth: BusAuth | None = None,
    layout: Layout | None = None,
) -> None:
    """Run the storage bridge until cancelled (``storage_events=bridge``): SeaweedFS's, or
    MinIO's and the reconciler."""
    if settings.storage_backend == "seaweedfs":
        from eventbus.seaweed_bridge import run_seaweed_bridge  # gRPC: loaded where used

        if not settings.storage_seaweedfs_filer:
            raise SystemExit(
                "deepfaas: the SeaweedFS bridge needs its filer: DEEPFAAS_STORAGE_SEAWEEDFS_FILER"
            )
        bus = await Bus.connect(nats_url, name="seaweed-bridge", prefix=event_prefix, auth=auth)
        try:
            await run_seaweed_bridge(bus, settings.storage_seaweedfs_filer, layout=layout)
        finally:
            await bus.close()
        return
    bus = await Bus.connect(nats_url, name="minio-bridge", prefix=event_prefix, auth=auth)
    await ensure_layout(bus.js)
    store = create_storage(settings)
    ledger = StorageLedger(bus, layout=layout)
    owners = BucketOwners(bus)  # each event carries its bucket owner's namespace
    await owners.start()
    bridge = MinioBridge(
        bus,
        stream=settings.storage_bridge_stream,
        subject=settings.storage_bridge_subject,
        ledger=ledger,
        owners=owners,
        layout=layout,
    )
    reconciler = StorageReconciler(
        bus,
        store,
        ledger=ledger,
        owners=owners,
        interval=settings.storage_reconcile_s,
        min_age=settings.storage_reconcile_min_age_s,
    )
    await bridge.start()
    if settings.storage_reconcile_s > 0:
        await reconciler.start()
    try:
        await asyncio.Event().wait()
    finally:
        await reconciler.stop()
        await bridge.stop()
        await owners.stop()
        await store.close()
        await bus.close()


def start_seaweedfs(settings: StorageSettings) -> EmbeddedSeaweed | None:
    """Start SeaweedFS under ``<data_dir>/seaweedfs`` when the settings choose it and name none
    (a missing ``weed`` stops the process with one line); None otherwise."""
    if settings.storage_backend != "seaweedfs" or settings.storage_s3_endpoint:
        return None
    try:
        find_weed(settings.storage_seaweedfs_bin)
        return EmbeddedSeaweed(
            settings.data_dir / "seaweedfs", binary=settings.storage_seaweedfs_bin
        ).start()
    except StorageUnavailableError as exc:
        raise SystemExit(f"deepfaas: {exc}") from None


def seaweedfs_settings(seaweed: EmbeddedSeaweed) -> dict[str, object]:
    """The settings that point every part at an embedded SeaweedFS."""
    return {
        "storage_s3_endpoint": seaweed.s3_endpoint,
        "storage_seaweedfs_filer": seaweed.filer,
        "storage_s3_secure": False,
        "storage_s3_access_key": SecretStr(seaweed.access_key),
        "storage_s3_secret_key": SecretStr(seaweed.secret_key),
    }


def storage_bridge_command() -> None:
    """Run only the storage bridge (MinIO's notifications, or SeaweedFS's filer log)."""
    import contextlib
    import logging

    from gateway.settings import GatewaySettings
    from gateway.up import settings_or_exit

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = settings_or_exit(GatewaySettings)
    if settings.storage_events != "bridge":
        raise SystemExit("deepfaas: DEEPFAAS_STORAGE_EVENTS is not bridge: nothing to bridge")
    auth = settings.bus_auth("bridge")
    bridge = run_storage_bridge(
        settings, settings.nats_url, settings.event_prefix, auth=auth, layout=settings.layout()
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(bridge)
