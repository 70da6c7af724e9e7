"""What a finished activation leaves behind: its output object and its completion event.

Both belong to the function's namespace: the output goes only to a bucket that namespace owns
(checked again here, though the trigger route checked it at creation: a bucket can change
hands), and both events carry the ``namespace`` attribute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from nats.js.errors import NoStreamResponseError

from eventbus.buckets import BucketOwners
from eventbus.connection import Bus
from eventbus.errors import BucketAccessError
from eventbus.namespaces import DEFAULT_NAMESPACE, EVENT_ATTRIBUTE, namespace_of
from eventbus.publish import publish_event
from eventbus.storage import Storage
from eventbus.storage.errors import BucketExistsError, NoSuchBucketError
from eventbus.storage_events import emit_created
from eventbus.streams import Layout
from eventbus.subjects import legacy_activation_subject
from eventbus.types import CloudEvent
from runtimes.tally import CompletionTally
from runtimes.types import ActivationRecord, ActivationStatus

log = logging.getLogger(__name__)
EVENT_RESULT_LIMIT: Final = 256 * 1024
#: a completion is sent again only this far inside the de-duplication window (clock skew)
REPEAT_MARGIN_S: Final = 20.0
#: how long a completion event is retried in place (a JetStream leader election takes seconds);
#: well inside the de-duplication window, so a retry that did land the first time is dropped
COMPLETION_PATIENCE_S: Final = 30.0


class CompletionNotPublishedError(RuntimeError):
    """The bus did not take a completion event within its patience."""


async def write_output(
    bus: Bus,
    storage: Storage | None,
    target: dict[str, str],
    result: Any,
    *,
    announce: bool,
    owners: BucketOwners | None = None,
) -> dict[str, Any]:
    """Write a result (JSON, or bytes as they are) to a trigger's output target, a bucket of
    the target's namespace (`BucketAccessError` for another namespace's bucket)."""
    if storage is None:
        raise RuntimeError("this worker has no object store configured")
    namespace = target.get("namespace") or DEFAULT_NAMESPACE
    # Read-only on purpose (a worker may read owners, not claim): the trigger route claimed
    # the bucket for the namespace; a bucket nobody claimed is `default`'s.
    if not await (owners or BucketOwners(bus)).owns(target["bucket"], namespace):
        raise BucketAccessError(
            f"namespace {namespace!r} does not own output bucket {target['bucket']!r}: a "
            "trigger writes only buckets of its namespace (create the bucket, or save the "
            "trigger again to claim it)",
            bucket=target["bucket"],
        )
    if isinstance(result, bytes):
        body, content_type = result, sniff(result)
    else:
        body, content_type = orjson.dumps(result), "application/json"
    try:
        info = await storage.put(target["bucket"], target["key"], body, content_type=content_type)
    except NoSuchBucketError:
        # An output bucket appears with its first output, as OSCAR creates its buckets.
        with contextlib.suppress(BucketExistsError):
            await storage.create_bucket(target["bucket"])
        info = await storage.put(target["bucket"], target["key"], body, content_type=content_type)
    if announce:
        await emit_created(bus, storage, info, namespace=namespace)
    return {"bucket": info.bucket, "key": info.key, "size": info.size, "etag": info.etag}


def completion_event(bus: Bus, record: ActivationRecord) -> CloudEvent:
    """`activation.completed` or `.failed`, its id derived from the activation id."""
    ok = record.status is ActivationStatus.SUCCESS
    data: dict[str, Any] = {
        "activation_id": record.id,
        "function": record.function,
        "version": record.version,
        "status": record.status.value,
        "mode": record.mode,
        "duration_ms": record.duration_ms,
        "wait_ms": record.wait_ms,
        "init_ms": record.init_ms,
        "cold_start": record.cold_start,
        "attempts": record.attempts,
        "cause": record.cause,
        "error": record.error,
        "output": record.output,
        "annotations": record.annotations,
    }
    if ok and len(orjson.dumps(record.result)) <= EVENT_RESULT_LIMIT:
        data["result"] = record.result
    suffix = "completed" if ok else "failed"
    return CloudEvent.create(
        id=f"{record.id}-{suffix}",
        type=bus.event_type(f"activation.{suffix}"),
        source=f"/functions/{record.function}",
        subject=record.id,
        data=data,
        extensions={EVENT_ATTRIBUTE: record.namespace or namespace_of(record.function)},
    )


async def emit_completion(
    bus: Bus,
    record: ActivationRecord,
    *,
    tally: CompletionTally | None,
    patience: float = COMPLETION_PATIENCE_S,
) -> bool:
    """Publish the completion event, retrying while the bus cannot take it (its id makes a
    repeat a duplicate), and count it in ``tally`` (the gateways' metrics); whether it was
    published. A False leaves the caller to have the invocation redelivered, whose worker sends
    the completion again."""
    deadline = time.monotonic() + patience
    delay = 0.1
    event = completion_event(bus, record)
    suffix = event.type.rsplit(".", 1)[-1]
    unanswered = False
    while True:
        try:
            try:
                ack = await publish_event(bus, event)
            except NoStreamResponseError:
                # No stream holds `activation.>`: a process of the previous version put EVENTS
                # back as it knew it (an upgrade under way). The subject it used is still
                # stored and dispatched, and still open to this role.
                ack = await publish_event(bus, event, subject=legacy_activation_subject(suffix))
            # a repeat was counted where it was first published, unless that was an earlier
            # try of this call whose answer did not come
            if tally is not None and (not ack.duplicate or unanswered):
                tally.add(record)
            return True
        except Exception as exc:
            unanswered = True
            if time.monotonic() + delay >= deadline:
                log.warning("activation %s: completion event not published: %s", record.id, exc)
                return False
            log.info("activation %s: completion event not taken yet (%s); retrying", record.id, exc)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def emit_completion_again(
    bus: Bus,
    record: ActivationRecord,
    *,
    tally: CompletionTally | None,
    patience: float = COMPLETION_PATIENCE_S,
) -> bool:
    """Publish a finished activation's completion once more (its worker may have died before
    publishing it), only while JetStream drops it if it is there already; whether it did.
    Raises CompletionNotPublishedError when the bus would not take it, so that the invocation
    is redelivered and this is tried again."""
    # Later (a storage record replayed after minutes) a repeat would be a second event.
    if record.end is None:
        return False
    age = (datetime.now(UTC) - record.end).total_seconds()
    left = Layout().duplicate_window - REPEAT_MARGIN_S - age
    if left <= 0:
        log.info("activation %s ended %.0f s ago: its completion is not re-sent", record.id, age)
        return False
    if not await emit_completion(bus, record, tally=tally, patience=min(patience, left)):
        raise CompletionNotPublishedError(record.id)
    return True


def sniff(data: bytes) -> str:
    for magic, kind in (
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"GIF8", "image/gif"),
        (b"%PDF", "application/pdf"),
    ):
        if data.startswith(magic):
            return kind
    return "application/octet-stream"


def output_target(invocation: CloudEvent) -> dict[str, str] | None:
    """``{bucket, key, namespace}`` of an invocation's output, the namespace being that of the
    invoked function (the invocation's subject), or None when it names no output."""
    bucket = invocation.extensions.get("outbucket")
    key = invocation.extensions.get("outkey")
    if isinstance(bucket, str) and isinstance(key, str) and bucket and key:
        return {"bucket": bucket, "key": key, "namespace": namespace_of(invocation.subject or "")}
    return None
