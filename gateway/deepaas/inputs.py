"""What a DEEPaaS-style request carries: a file (`data`) and arguments, from JSON, form, a raw
`image/*` body or the query."""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from fastapi import Request
from starlette.datastructures import UploadFile

from eventbus.errors import NotFoundError, ValidationFailedError
from eventbus.storage import Storage
from eventbus.storage.errors import BucketExistsError
from gateway.routes.catalog import catalog_of
from gateway.state import state_of
from runtimes.catalog.plugins import LoadedModelPlugin, discover_models, load_model_plugin
from runtimes.catalog.requests import INLINE_LIMIT
from runtimes.catalog.types import Module
from runtimes.errors import ModelNotFoundError
from runtimes.types import StoredObject

STAGING_BUCKET: Final = "deepfaas-staging"
#: query parameters the platform reads itself; everything else is a model argument
RESERVED: Final = frozenset({"version", "wait"})


@dataclass
class ModelRequest:
    """The uploaded bytes (if any), their file name, and the other arguments."""

    data: bytes | None = None
    filename: str | None = None
    args: dict[str, Any] = field(default_factory=dict)


async def read_model_request(request: Request) -> ModelRequest:
    """Arguments from the query string, then a JSON or multipart/form body over them."""
    out = ModelRequest(args={k: v for k, v in request.query_params.items() if k not in RESERVED})
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form()
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                content = await value.read()
                if key == "data":
                    out.data, out.filename = content, value.filename
                else:
                    out.args[key] = content
            else:
                out.args[key] = value
        return out
    if kind.startswith("image/") or kind == "application/octet-stream":
        # the raw file as the body (`curl --data-binary @x.png -H 'content-type: image/png'`)
        out.data = await request.body()
        out.filename = _disposition_name(request.headers.get("content-disposition", ""))
        out.filename = out.filename or f"input.{kind.partition('/')[2] or 'bin'}"
        return out
    body = await request.body()
    if not body:
        return out
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailedError(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise ValidationFailedError("the JSON body must be an object of arguments")
    data = parsed.pop("data", None)
    if isinstance(data, str):
        try:
            out.data = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValidationFailedError("`data` is not valid base64", loc=["body", "data"]) from exc
    elif data is not None:
        raise ValidationFailedError("`data` must be a base64 string", loc=["body", "data"])
    out.filename = parsed.pop("filename", None) if isinstance(parsed.get("filename"), str) else None
    out.args.update(parsed)
    return out


def _disposition_name(header: str) -> str | None:
    """The file name a `Content-Disposition` header gives (``filename="x.png"``), if any."""
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "filename" and value.strip('"'):
            return value.strip('"').rsplit("/", 1)[-1]
    return None


@functools.cache
def installed_plugin(name: str) -> LoadedModelPlugin | None:
    """The plug-in if it is installed in the gateway process (to check arguments early).

    Looked up once per process: scanning the entry points and loading a plug-in cost ~7 ms,
    more than a prediction, and what is installed does not change while the gateway runs.
    """
    if name not in discover_models():
        return None
    try:
        return load_model_plugin(name)
    except NotFoundError:
        return None


async def stage(storage: Storage, data: bytes, filename: str | None, prefix: str) -> StoredObject:
    """Write a large input to the staging bucket; the function reads it from there."""
    with contextlib.suppress(BucketExistsError):
        await storage.create_bucket(STAGING_BUCKET)
    key = f"{prefix}/{uuid.uuid4().hex}/{(filename or 'input').rsplit('/', 1)[-1]}"
    info = await storage.put(STAGING_BUCKET, key, data, size=len(data))
    return StoredObject(bucket=STAGING_BUCKET, key=key, size=len(data), etag=info.etag)


def inline_or_staged(data: bytes) -> bool:
    """Whether ``data`` may travel inside the message."""
    return len(data) <= INLINE_LIMIT


async def known_module(request: Request, name: str, *, mirrored: bool = False) -> Module:
    """The catalog module ``name``; a 404 naming the known ones if there is none.

    ``mirrored`` (a prediction, which needs only the owner and the plug-in): from the gateway's
    mirror of the modules when it holds it (a KV read cost ~0.5 ms of a ~9 ms prediction; a
    change shows there once the watch brings it), else from KV as every other caller reads.
    """
    found = state_of(request).modules.get(name) if mirrored else None
    if found is not None:
        return found
    catalog = catalog_of(request)
    try:
        return await catalog.get_module(name)
    except ModelNotFoundError:
        pass
    known = [m.name for m in await catalog.list_modules()]
    raise ModelNotFoundError(
        f"no model {name!r} (known: {', '.join(known) or 'none'})", model=name, known=known
    )
