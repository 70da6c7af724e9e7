"""SeaweedFS filer metadata changes as object writes and deletes, and their storage events.

The filer streams every change of its tree (``SubscribeMetadata``): a response names the
directory, the entry before (``old_entry``) and after (``new_entry``, under
``new_parent_path``) and the change's time ``ts_ns``. S3 buckets are the folders of
``/buckets``; an object is a file entry below one. A create has no old entry, a delete no new
one, an overwrite both at one path, a rename both at two paths (a delete and a create). Folders,
the parts of multipart uploads (``<bucket>/.uploads/``) and changes that keep an object's
content (metadata only) are no object writes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from eventbus.connection import Bus
from eventbus.seaweed_filer_pb2 import Entry, SubscribeMetadataResponse
from eventbus.storage.records import RecordContext, object_created_record, object_removed_record
from eventbus.storage.seaweedfs import BUCKETS_DIR
from eventbus.storage.types import DEFAULT_CONTENT_TYPE, ObjectInfo
from eventbus.storage_events import StorageEventKind, storage_event
from eventbus.types import CloudEvent

#: the store name in the ``source`` of the events this bridge emits
SEAWEEDFS_STORE: Final = "seaweedfs"
#: the ``eventSource`` of their records
SEAWEEDFS_SOURCE: Final = "seaweedfs:filer"
#: where SeaweedFS's S3 API keeps the parts of unfinished multipart uploads
UPLOADS_DIR: Final = ".uploads"
_ETAG: Final = "Seaweed-X-Amz-ETag"
_META_PREFIX: Final = "x-amz-meta-"


@dataclass(frozen=True)
class ObjectChange:
    """One object write (``created``, with its ``info``) or delete, at ``ts_ns``."""

    kind: StorageEventKind
    bucket: str
    key: str
    ts_ns: int
    info: ObjectInfo | None = None

    @property
    def time(self) -> datetime:
        """When the filer made the change."""
        return datetime.fromtimestamp(self.ts_ns / 1e9, UTC)


def object_path(directory: str, name: str) -> tuple[str, str] | None:
    """(bucket, key) of ``directory/name``, or None outside the buckets or in an upload's parts."""
    root = BUCKETS_DIR.rstrip("/") + "/"
    if not directory.startswith(root) or not name:
        return None
    bucket, _, folder = directory[len(root) :].partition("/")
    key = f"{folder}/{name}" if folder else name
    if not bucket or key.split("/", 1)[0] == UPLOADS_DIR:
        return None
    return bucket, key


def entry_etag(entry: Entry) -> str:
    """The ETag that SeaweedFS's S3 API gives the entry (as a HEAD answers it)."""
    stored: bytes | None = entry.extended.get(_ETAG)
    if stored:
        return stored.decode("utf-8", "replace").strip('"')
    if entry.attributes.md5:
        return entry.attributes.md5.hex()
    digests = []
    for chunk in entry.chunks:
        try:
            digests.append(base64.b64decode(chunk.e_tag, validate=True))
        except (binascii.Error, ValueError):
            digests.append(chunk.e_tag.encode())
    if len(digests) == 1:
        return digests[0].hex()
    if not digests:
        return hashlib.md5(entry.content, usedforsecurity=False).hexdigest()
    joined = hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest()
    return f"{joined}-{len(digests)}"


def object_info(bucket: str, key: str, entry: Entry, ts_ns: int) -> ObjectInfo:
    """What a HEAD of the object would say, from its filer entry."""
    metadata = {}
    for name, value in entry.extended.items():
        if name.lower().startswith(_META_PREFIX):
            metadata[name[len(_META_PREFIX) :].lower()] = value.decode("utf-8", "replace")
    return ObjectInfo(
        bucket=bucket,
        key=key,
        size=int(entry.attributes.file_size),
        etag=entry_etag(entry),
        content_type=entry.attributes.mime or DEFAULT_CONTENT_TYPE,
        last_modified=datetime.fromtimestamp(ts_ns / 1e9, UTC),
        metadata=metadata,
    )


def _content(entry: Entry) -> tuple[object, ...]:
    chunks = tuple((c.file_id, c.fid.volume_id, c.fid.file_key, c.e_tag) for c in entry.chunks)
    attrs = entry.attributes
    return (chunks, entry.content, attrs.file_size, attrs.md5, entry.extended.get(_ETAG))


def filer_changes(response: SubscribeMetadataResponse) -> list[ObjectChange]:
    """The object writes and deletes in one filer change (none, one, or two for a rename)."""
    note = response.event_notification
    old = note.old_entry if note.HasField("old_entry") else None
    new = note.new_entry if note.HasField("new_entry") else None
    old_at = object_path(response.directory, old.name) if old and not old.is_directory else None
    new_dir = note.new_parent_path or response.directory
    new_at = object_path(new_dir, new.name) if new and not new.is_directory else None
    ts = response.ts_ns
    changes = []
    if old_at is not None and old_at != new_at:
        changes.append(ObjectChange("deleted", *old_at, ts))
    if new_at is not None and new is not None:
        if old is not None and old_at == new_at and _content(old) == _content(new):
            return changes  # tags or attributes changed, not the object
        changes.append(ObjectChange("created", *new_at, ts, object_info(*new_at, new, ts)))
    return changes


def change_event(bus: Bus, change: ObjectChange, *, namespace: str) -> CloudEvent:
    """The storage CloudEvent of a change; its id is the same however often it is made."""
    context = RecordContext(event_source=SEAWEEDFS_SOURCE)
    if change.info is not None:
        record = object_created_record(change.info, context=context, time=change.time)
    else:
        record = object_removed_record(change.bucket, change.key, context=context, time=change.time)
    sequencer = f"{change.ts_ns:X}"  # the filer's own nanoseconds, not the rounded time
    record["s3"]["object"]["sequencer"] = sequencer
    return storage_event(
        event_prefix=bus.prefix,
        store_name=SEAWEEDFS_STORE,
        kind=change.kind,
        bucket=change.bucket,
        key=change.key,
        etag=change.info.etag if change.info is not None else None,
        sequencer=sequencer,
        time=change.time,
        record=record,
        namespace=namespace,
    )
