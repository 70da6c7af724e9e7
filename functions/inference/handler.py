"""Predict with a catalog model: the promoted version (or a pinned one), kept warm per worker."""

from __future__ import annotations

import asyncio
import functools

from functions.inference.models import InferenceInput, InferenceOutput
from functions.inference.server import ModelServer
from runtimes.catalog import CatalogStore
from runtimes.errors import ModelInputError
from runtimes.types import Context

_servers: dict[int, ModelServer] = {}


def server_for(ctx: Context) -> ModelServer:
    """The worker's model server (one per bus connection: one per worker process)."""
    if ctx.bus is None:
        raise RuntimeError("inference needs the platform's bus (run it on a deepfaas worker)")
    server = _servers.get(id(ctx.bus))
    if server is None:
        server = _servers[id(ctx.bus)] = ModelServer(CatalogStore(ctx.bus, ctx.storage, actor=None))
    return server


async def handle(inp: InferenceInput, ctx: Context) -> InferenceOutput:
    """Read the input, predict with the version the catalog says, name that version."""
    server = server_for(ctx)
    ctx.annotations["model"] = inp.model
    # the catalog is read while the input is read and the prediction starts (`ModelServer`)
    resolving = asyncio.ensure_future(server.resolve(inp.model, inp.version))
    resolving.add_done_callback(functools.partial(_annotate_version, ctx))
    try:
        data, filename = await _input_bytes(inp, ctx)
    except Exception:
        await resolving  # a model that cannot serve is the error named first
        raise
    except BaseException:
        resolving.cancel()
        raise
    args = {**inp.args, "data": data, "filename": filename}
    version, answer, loaded = await server.predict(inp.model, inp.version, resolving, args)
    ctx.annotations.update(batch=answer.batch, loaded=loaded)
    if answer.error is not None:
        raise answer.error
    ctx.logger.info(
        "%s v%d predicted on %s (batch of %d)",
        inp.model,
        version,
        filename or "inline data",
        answer.batch,
    )
    return InferenceOutput(
        model=inp.model, version=version, result=answer.result or {}, input=inp.object
    )


def _annotate_version(ctx: Context, resolving: asyncio.Future[int]) -> None:
    """The version the catalog named, in the record even when the call fails after (a bad
    input, a version that does not load); reading the exception marks it retrieved."""
    if not resolving.cancelled() and resolving.exception() is None:
        ctx.annotations["model_version"] = resolving.result()


async def _input_bytes(inp: InferenceInput, ctx: Context) -> tuple[bytes, str | None]:
    if inp.data is not None:
        return inp.data, inp.filename
    assert inp.object is not None  # the input model allows exactly one of the two
    if ctx.storage is None:
        raise RuntimeError("this worker has no object store to read the input from")
    info, stream = await ctx.storage.get(inp.object.bucket, inp.object.key)
    if info.size > inp.max_bytes:
        await stream.aclose()
        raise ModelInputError(
            f"{inp.object.key} is {info.size} bytes, over the {inp.max_bytes}-byte limit",
            model=inp.model,
        )
    data = b"".join([chunk async for chunk in stream])
    return data, inp.filename or inp.object.key.rsplit("/", 1)[-1]
