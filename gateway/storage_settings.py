"""Storage settings (a mixin of the gateway's settings), the backend factory, the bridge runner.

``storage_backend`` is ``local`` (a directory, ``<data_dir>/storage`` unless ``storage_root``)
or ``s3`` (any S3 endpoint; keys from ``DEEPFAAS_STORAGE_S3_ACCESS_KEY`` and
``DEEPFAAS_STORAGE_S3_SECRET_KEY``). ``storage_events`` says who emits the
storage events: ``platform`` (the gateway, after each write or delete through it) or
``bridge`` (MinIO's NATS notifications through the MinIO bridge; the gateway emits none, so
an upload is announced once).
"""

from __future__ import annotations

import asyncio

from eventbus.buckets import BucketOwners
from eventbus.connection import Bus
from eventbus.credentials import BusAuth
from eventbus.minio_bridge import (
    MinioBridge,
    StorageReconciler,
)
from eventbus.storage.settings import StorageSettings, create_storage
from eventbus.storage_events import StorageLedger
from eventbus.streams import ensure_layout


def gateway_emits_events(settings: StorageSettings) -> bool:
    """Whether the gateway announces the writes and deletes made through it."""
    return settings.storage_events == "platform"


async def run_storage_bridge(
    settings: StorageSettings, nats_url: str, event_prefix: str, *, auth: BusAuth | None = None
) -> None:
    """Run the MinIO bridge and the reconciler until cancelled (``storage_events=bridge``)."""
    bus = await Bus.connect(nats_url, name="minio-bridge", prefix=event_prefix, auth=auth)
    await ensure_layout(bus.js)
    store = create_storage(settings)
    ledger = StorageLedger(bus)
    owners = BucketOwners(bus)  # each event carries its bucket owner's namespace
    await owners.start()
    bridge = MinioBridge(
        bus,
        stream=settings.storage_bridge_stream,
        subject=settings.storage_bridge_subject,
        ledger=ledger,
        owners=owners,
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
