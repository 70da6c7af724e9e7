"""/v1/buckets: buckets and objects, streamed in and out; each change announced as an event.

Bodies stream straight into the store (never whole in memory), so this prefix is exempt from
the body-size limit. Keys are validated before anything is read or written. With
``storage_events=platform`` each completed write or delete through here emits one storage
event; with ``bridge`` the store's own notifications do, and the gateway stays silent.

Bucket names are global, as in S3, and each bucket belongs to one namespace
(`eventbus.buckets`): a caller lists only its namespace's buckets and reads or writes only
their objects. Another namespace's bucket answers 404, as a missing one does (names of others
are not confirmed), except on create, where a taken name answers 409.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import AsyncIterator
from datetime import datetime
from email.utils import format_datetime
from typing import Annotated, Final
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from eventbus.errors import BucketTakenError, ValidationFailedError
from eventbus.storage import (
    DEFAULT_CONTENT_TYPE,
    BucketInfo,
    InvalidRangeError,
    NoSuchBucketError,
    NoSuchKeyError,
    ObjectInfo,
    validate_bucket_name,
    validate_key,
)
from eventbus.storage_events import emit_created, emit_deleted
from gateway.auth.access import namespace
from gateway.problems import problem
from gateway.state import state_of
from gateway.storage_settings import gateway_emits_events

router = APIRouter(prefix="/v1/buckets", tags=["storage"])

#: request headers whose suffix names a user metadata entry
META_PREFIXES: Final = ("x-amz-meta-", "x-meta-")
_RANGE: Final = re.compile(r"bytes=(\d*)-(\d*)")


class BucketOut(BaseModel):
    """A bucket."""

    name: str
    created: datetime | None = None


class ObjectOut(BaseModel):
    """An object's description (metadata names lower-case, unprefixed)."""

    bucket: str
    key: str
    size: int
    etag: str
    content_type: str
    last_modified: datetime
    metadata: dict[str, str] = Field(default_factory=dict)
    version_id: str | None = None


class SummaryOut(BaseModel):
    """An object as a listing shows it."""

    key: str
    size: int
    etag: str
    last_modified: datetime


class ListingOut(BaseModel):
    """One page of keys and common prefixes; pass ``next_marker`` as ``start_after``."""

    bucket: str
    prefix: str
    delimiter: str | None
    objects: list[SummaryOut]
    prefixes: list[str]
    is_truncated: bool
    next_marker: str | None


def _bucket_out(info: BucketInfo) -> BucketOut:
    return BucketOut(name=info.name, created=info.created)


def _object_out(info: ObjectInfo) -> ObjectOut:
    return ObjectOut(
        bucket=info.bucket,
        key=info.key,
        size=info.size,
        etag=info.etag,
        content_type=info.content_type,
        last_modified=info.last_modified,
        metadata=dict(info.metadata),
        version_id=info.version_id,
    )


def object_path(bucket: str, key: str) -> str:
    """The URL path of an object."""
    return f"/v1/buckets/{bucket}/objects/{quote(key, safe='/')}"


def _object_headers(info: ObjectInfo) -> dict[str, str]:
    headers = {
        "etag": f'"{info.etag}"',
        "last-modified": format_datetime(info.last_modified, usegmt=True),
        "content-type": info.content_type,
        "accept-ranges": "bytes",
    }
    headers.update({f"x-amz-meta-{name}": value for name, value in info.metadata.items()})
    if info.version_id:
        headers["x-amz-version-id"] = info.version_id
    return headers


async def _owned(request: Request, bucket: str) -> str:
    """The caller's namespace if it owns ``bucket``; else NoSuchBucketError (404)."""
    ns = namespace(request)
    if not await state_of(request).buckets.owns(bucket, ns):
        raise NoSuchBucketError(f"bucket {bucket!r} does not exist", bucket=bucket)
    return ns


# -- buckets --------------------------------------------------------------------------------


@router.get("", response_model=list[BucketOut])
async def list_buckets(request: Request) -> list[BucketOut]:
    """The caller's namespace's buckets, by name."""
    state, ns = state_of(request), namespace(request)
    return [
        _bucket_out(info)
        for info in await state.storage.list_buckets()
        if await state.buckets.owns(info.name, ns)
    ]


@router.put("/{bucket}", status_code=201, response_model=BucketOut)
async def create_bucket(request: Request, bucket: str, response: Response) -> BucketOut:
    """Create a bucket of the caller's namespace; 409 when it exists or the name is taken."""
    state = state_of(request)
    validate_bucket_name(bucket)
    try:
        claimed = await state.buckets.ensure_writable(bucket, namespace(request), state.storage)
    except BucketTakenError as exc:
        raise BucketTakenError(
            f"bucket name {bucket!r} is taken: bucket names are global, choose another",
            bucket=bucket,
        ) from exc
    try:
        info = await state.storage.create_bucket(bucket)
    except BaseException:
        if claimed:  # claimed for a bucket that was not made: free the name again
            await state.buckets.release(bucket)
        raise
    response.headers["location"] = f"/v1/buckets/{bucket}"
    return _bucket_out(info)


@router.head("/{bucket}")
async def head_bucket(request: Request, bucket: str) -> Response:
    """200 when the bucket exists and is the caller's, else 404."""
    await _owned(request, bucket)
    if not await state_of(request).storage.bucket_exists(bucket):
        raise NoSuchBucketError(f"bucket {bucket!r} does not exist", bucket=bucket)
    return Response(status_code=200)


@router.delete("/{bucket}", status_code=204)
async def delete_bucket(request: Request, bucket: str) -> Response:
    """Delete an empty bucket of the caller's; 409 while it holds objects. The name is free
    again afterwards."""
    await _owned(request, bucket)
    state = state_of(request)
    await state.storage.delete_bucket(bucket)
    await state.buckets.release(bucket)
    return Response(status_code=204)


@router.get("/{bucket}/objects", response_model=ListingOut)
async def list_objects(
    request: Request,
    bucket: str,
    prefix: Annotated[str, Query(description="only keys starting so")] = "",
    delimiter: Annotated[str | None, Query(description="group keys by it, e.g. '/'")] = None,
    start_after: Annotated[str | None, Query(description="keys after this one")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> ListingOut:
    """One page of the bucket's keys (and common prefixes with a delimiter), in key order."""
    await _owned(request, bucket)
    page = await state_of(request).storage.list(
        bucket, prefix=prefix, delimiter=delimiter, start_after=start_after, limit=limit
    )
    return ListingOut(
        bucket=bucket,
        prefix=prefix,
        delimiter=delimiter,
        objects=[
            SummaryOut(key=o.key, size=o.size, etag=o.etag, last_modified=o.last_modified)
            for o in page.objects
        ],
        prefixes=list(page.prefixes),
        is_truncated=page.is_truncated,
        next_marker=page.next_marker,
    )


# -- objects --------------------------------------------------------------------------------


def _declared_size(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise ValidationFailedError(f"invalid Content-Length {value!r}", field="content-length")
    return int(value)


def _metadata(request: Request) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in request.headers.items():
        for prefix in META_PREFIXES:
            if name.startswith(prefix):
                found[name[len(prefix) :]] = value
    return found


@router.put(
    "/{bucket}/objects/{key:path}",
    status_code=201,
    response_model=ObjectOut,
    responses={200: {"model": ObjectOut, "description": "replaced an object"}},
)
async def put_object(request: Request, bucket: str, key: str, response: Response) -> ObjectOut:
    """Store the request body as the object (201 new, 200 replaced); the ETag in a header."""
    state = state_of(request)
    store = state.storage
    validate_bucket_name(bucket)
    validate_key(key, bucket=bucket)  # before a byte is read or written
    ns = await _owned(request, bucket)
    try:
        await store.stat(bucket, key)
        existed = True
    except NoSuchKeyError:
        existed = False
    info = await store.put(
        bucket,
        key,
        request.stream(),
        content_type=content_type_of(key, request.headers.get("content-type")),
        metadata=_metadata(request),
        size=_declared_size(request),
    )
    if gateway_emits_events(state.settings):
        await emit_created(state.bus, store, info, namespace=ns)
    response.status_code = 200 if existed else 201
    response.headers["etag"] = f'"{info.etag}"'
    response.headers["location"] = object_path(bucket, key)
    return _object_out(info)


#: Python's own table of types by extension (not the machine's /etc/mime.types: the same
#: answer on every host)
_TYPES: Final = mimetypes.MimeTypes()


def content_type_of(key: str, sent: str | None) -> str:
    """The type the client sent, or, when it sent none or the generic one, the key's guess."""
    if sent and sent.split(";")[0].strip().lower() != DEFAULT_CONTENT_TYPE:
        return sent
    guessed, encoding = _TYPES.guess_type(key, strict=False)
    if encoding is not None:  # `.tar.gz` is gzip bytes, not a tar file
        guessed = None
    return guessed or sent or DEFAULT_CONTENT_TYPE


def _parse_range(header: str | None) -> tuple[int | None, int | None] | None:
    """``(first, last)`` of a single ``bytes=`` range (either may be None); None if absent."""
    match = _RANGE.fullmatch(header.strip()) if header else None
    if match is None or not (match[1] or match[2]):
        return None  # absent, several ranges or not bytes: answer the whole object
    first = int(match[1]) if match[1] else None
    last = int(match[2]) if match[2] else None
    if first is not None and last is not None and last < first:
        return None
    return first, last


def _unsatisfiable(size: int | None, detail: str) -> Response:
    response = problem(416, detail, kind="range-not-satisfiable")
    if size is not None:
        response.headers["content-range"] = f"bytes */{size}"
    return response


@router.get("/{bucket}/objects/{key:path}", response_class=StreamingResponse)
async def get_object(request: Request, bucket: str, key: str) -> Response:
    """The object's bytes, streamed; one ``Range: bytes=a-b`` range gets a 206."""
    await _owned(request, bucket)
    store = state_of(request).storage
    wanted = _parse_range(request.headers.get("range"))
    offset, length = 0, None
    if wanted is not None:
        first, last = wanted
        if first is None:  # a suffix: the last N bytes
            assert last is not None
            size = (await store.stat(bucket, key)).size
            if last == 0 or size == 0:
                return _unsatisfiable(size, "an empty suffix range")
            offset = max(0, size - last)
        else:
            offset = first
            length = None if last is None else last - first + 1
    try:
        info, stream = await store.get(bucket, key, offset=offset, length=length)
    except InvalidRangeError as exc:
        return _unsatisfiable(None, exc.message)
    headers = _object_headers(info)
    end = info.size if length is None else min(info.size, offset + length)
    headers["content-length"] = str(end - offset)
    status = 200
    if wanted is not None:
        status = 206
        headers["content-range"] = f"bytes {offset}-{end - 1}/{info.size}"

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in stream:
                yield chunk
        finally:
            await stream.aclose()

    return StreamingResponse(body(), status_code=status, headers=headers)


@router.head("/{bucket}/objects/{key:path}")
async def head_object(request: Request, bucket: str, key: str) -> Response:
    """The object's headers (size, type, ETag, metadata) without its bytes."""
    await _owned(request, bucket)
    info = await state_of(request).storage.stat(bucket, key)
    headers = _object_headers(info)
    headers["content-length"] = str(info.size)
    return Response(status_code=200, headers=headers)


@router.delete("/{bucket}/objects/{key:path}", status_code=204)
async def delete_object(request: Request, bucket: str, key: str) -> Response:
    """Delete the object (204 also when it was missing; an event only when it existed)."""
    ns = await _owned(request, bucket)
    state = state_of(request)
    existed = await state.storage.delete(bucket, key)
    if existed and gateway_emits_events(state.settings):
        await emit_deleted(state.bus, state.storage, bucket, key, namespace=ns)
    return Response(status_code=204)
