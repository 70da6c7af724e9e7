"""Storage: buckets, folders, objects; uploads go to `/v1/buckets` from the browser (with
progress), and the activations an upload caused are found through its storage event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Final

from fastapi import APIRouter, Form, Query, Request, Response

from eventbus.event_feed import EventFeed
from eventbus.namespaces import EVENT_ATTRIBUTE
from eventbus.storage import validate_bucket_name, validate_key
from eventbus.storage_events import CREATED_SUFFIX
from gateway.auth.access import namespace
from gateway.console.render import FRAGMENTS, FragmentRoute, fragment
from gateway.routes import activations as activations_api
from gateway.routes import storage as api
from gateway.state import state_of
from runtimes.types import ActivationStatus

router = APIRouter(
    prefix=f"{FRAGMENTS}/buckets", route_class=FragmentRoute, include_in_schema=False
)
#: how long a look for an upload's storage events reads the event stream, at most
FEED_IDLE_S: Final = 0.3
FEED_MAX_EVENTS: Final = 2000
#: htmx stops polling an element whose answer has this status
STOP_POLLING: Final = 286
#: how long after an upload the page keeps looking for what it caused: while none has
#: started (no trigger may match), and while some still run
LOOK_FOR_FIRST: Final = timedelta(minutes=2)
LOOK_FOR: Final = timedelta(minutes=10)
UNSETTLED: Final = (ActivationStatus.RUNNING, ActivationStatus.RETRYING)


@router.get("")
async def list_buckets(request: Request) -> Response:
    """The namespace's buckets and a form to make one."""
    return fragment(request, "buckets_list.html", buckets=await api.list_buckets(request))


@router.post("")
async def create_bucket(request: Request, name: Annotated[str, Form(max_length=63)]) -> Response:
    """Create a bucket of the namespace (409 when the name is taken: names are global)."""
    await api.create_bucket(request, name.strip(), Response())
    response = await show_bucket(request, name.strip(), "", "")
    response.headers["hx-trigger"] = "df-buckets"
    return response


@router.get("/{bucket}")
async def show_bucket(
    request: Request,
    bucket: str,
    prefix: Annotated[str, Query(max_length=1024)] = "",
    folder: Annotated[str, Query(max_length=255)] = "",
) -> Response:
    """A bucket: a drop zone for uploads, and its listing at ``prefix`` (or at a new
    ``folder`` under it, which exists once something is uploaded there, as in S3)."""
    await api.head_bucket(request, bucket)
    if folder.strip("/ "):
        prefix = f"{prefix}{folder.strip('/ ')}/"
        validate_key(prefix + "x", bucket=bucket)
    parts = [p for p in prefix.split("/") if p]
    crumbs = [(p, "/".join(parts[: i + 1]) + "/") for i, p in enumerate(parts)]
    return fragment(request, "bucket.html", bucket=bucket, prefix=prefix, crumbs=crumbs)


@router.get("/{bucket}/objects")
async def list_objects(request: Request, bucket: str, prefix: str = "") -> Response:
    """Folders and objects directly under ``prefix``."""
    listing = await api.list_objects(request, bucket, prefix, "/", None, 1000)
    return fragment(request, "objects_list.html", listing=listing)


@router.delete("/{bucket}/objects/{key:path}")
async def delete_object(request: Request, bucket: str, key: str) -> Response:
    """Delete an object (its storage event goes out as through `/v1`)."""
    await api.delete_object(request, bucket, key)
    return fragment(request, "deleted.html", what=key, trigger="df-objects")


@router.get("/{bucket}/caused")
async def caused(
    request: Request,
    bucket: str,
    key: Annotated[str, Query(min_length=1, max_length=1024)],
    since: Annotated[datetime, Query(description="when the upload began")],
) -> Response:
    """The activations that the storage events of ``key`` written since ``since`` caused; the
    answer stops the page's polling (286) once they have all ended, or after a while."""
    validate_bucket_name(bucket)
    validate_key(key, bucket=bucket)
    await api.head_bucket(request, bucket)  # the namespace's own bucket, or 404
    state, ns = state_of(request), namespace(request)
    since = since if since.tzinfo else since.replace(tzinfo=UTC)
    since = max(since, datetime.now(UTC) - timedelta(hours=1))
    ids = await _storage_event_ids(request, bucket, key, since, ns)
    records = (
        await state.activations.recent(
            limit=20, where=lambda r: r.namespace == ns and r.cause in ids, scan=500
        )
        if ids
        else []
    )
    settled = bool(records) and all(r.status not in UNSETTLED for r in records)
    waited = datetime.now(UTC) - since
    done = settled or waited > (LOOK_FOR if records else LOOK_FOR_FIRST)
    return fragment(
        request,
        "caused.html",
        status_code=STOP_POLLING if done else 200,
        stopped=done and not settled,
        events=len(ids),
        records=[activations_api.local(r) for r in reversed(records)],
    )


async def _storage_event_ids(
    request: Request, bucket: str, key: str, since: datetime, ns: str
) -> set[str]:
    """Ids of the created events of ``bucket/key`` in the namespace stored since ``since``."""
    state = state_of(request)
    created = f"{state.bus.prefix}.{CREATED_SUFFIX}"
    feed = await EventFeed.open(state.bus, since=since)
    ids: set[str] = set()
    try:
        for _ in range(FEED_MAX_EVENTS):
            stored = await feed.next(timeout=FEED_IDLE_S)
            if stored is None:
                break
            event = stored.event
            if (
                event.type == created
                and event.subject == key
                and event.extensions.get("bucket") == bucket
                and event.extensions.get(EVENT_ATTRIBUTE) == ns
            ):
                ids.add(event.id)
    finally:
        await feed.close()
    return ids
