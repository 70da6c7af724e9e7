"""Script functions: a shell script run with /bin/sh, as OSCAR's supervisor runs a service's.

Inside the sandbox like every function. The input is staged as a file: the object of a
storage event (fetched through ``ctx.storage``, so only the namespace's buckets) or the
request body (JSON as it is, anything else base64-decoded when it is base64, as OSCAR's
supervisor does). The script sees ``$INPUT_FILE_PATH``, ``$TMP_INPUT_DIR``, an empty
``$TMP_OUTPUT_DIR``, ``$STORAGE_OBJECT_KEY``, ``$EVENT``, ``$EVENT_TIME``, ``$JOB_UUID`` and the
function's own env. Its stdout and stderr are the activation's logs; exit status 0 is
success. The files it leaves in ``$TMP_OUTPUT_DIR`` are uploaded to each of the spec's
``script_outputs`` (or to a trigger's output target) when it exits.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import mimetypes
import os
import posixpath
import shutil
import signal
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import orjson

from eventbus.errors import DeepfaasError
from runtimes.types import Context, FunctionSpec, ScriptOutput
from runtimes.worker.loader import LoadedFunction

SHELL = "/bin/sh"


class ScriptFailedError(DeepfaasError):
    """The script exited with a status other than 0."""

    code = "script_failed"


def load_script(spec: FunctionSpec) -> LoadedFunction:
    """A loaded function that runs ``spec.script``."""

    async def run(body: Any, ctx: Context) -> Any:
        return await run_script(spec, body, ctx)

    return LoadedFunction(
        spec=spec,
        handler=run,
        is_async=True,
        takes_context=True,
        input_adapter=None,
        output_adapter=None,
    )


async def run_script(spec: FunctionSpec, body: Any, ctx: Context) -> Any:
    """Stage the input, run the script, upload its outputs; the OSCAR response or a summary."""
    work = Path(tempfile.mkdtemp(prefix="script-"))
    try:
        in_dir, out_dir = work / "input", work / "output"
        in_dir.mkdir()
        out_dir.mkdir()
        env = {**os.environ, "TMP_INPUT_DIR": str(in_dir), "TMP_OUTPUT_DIR": str(out_dir)}
        env["JOB_UUID"] = ctx.activation_id
        obj = body.get("object") if isinstance(body, dict) else None
        if isinstance(obj, dict) and obj.get("bucket") and obj.get("key"):
            env.update(await _stage_object(ctx, obj, in_dir))
            event = body.get("event")
            if isinstance(event, dict):  # OSCAR's $EVENT is the storage record itself
                env["EVENT"] = orjson.dumps(event.get("data", event)).decode()
                env["EVENT_TIME"] = str(event.get("time", ""))
        else:
            env["INPUT_FILE_PATH"] = str(_stage_body(body, in_dir))
        script = work / "script.sh"
        script.write_text(spec.script or "")
        output, status = await _run(script, env, work)
        if status != 0:
            tail = output.strip().splitlines()[-1:] or ["(no output)"]
            raise ScriptFailedError(f"the script exited with status {status}: {tail[0][:500]}")
        written = await _upload(spec.script_outputs, ctx, out_dir)
        ctx.annotations["outputs"] = written
        if ctx.output is not None or isinstance(obj, dict):
            return None if ctx.output is not None else {"outputs": written}
        return _response(out_dir, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _stage_object(ctx: Context, obj: dict[str, Any], in_dir: Path) -> dict[str, str]:
    bucket, key = str(obj["bucket"]), str(obj["key"])
    name = posixpath.basename(key)
    path = in_dir / (name if name not in ("", ".", "..") else "input")
    _, stream = await ctx.storage.get(bucket, key)
    with path.open("wb") as file:
        async for chunk in stream:
            file.write(chunk)
    return {"INPUT_FILE_PATH": str(path), "STORAGE_OBJECT_KEY": key, "STORAGE_BUCKET": bucket}


def _stage_body(body: Any, in_dir: Path) -> Path:
    """The request body as a file: JSON as it is, else base64-decoded when it is base64."""
    path = in_dir / "event-file"
    if isinstance(body, bytes):
        try:
            orjson.loads(body)
            data = body
        except orjson.JSONDecodeError:
            try:
                data = base64.b64decode(body, validate=True)
            except (binascii.Error, ValueError):
                data = body
    elif body == {}:
        data = b""
    else:
        data = orjson.dumps(body)
    path.write_bytes(data)
    return path


async def _run(script: Path, env: dict[str, str], cwd: Path) -> tuple[str, int]:
    """Run the script; its lines go to the activation's logs; all of it (stdout then stderr)."""
    process = await asyncio.create_subprocess_exec(
        SHELL,
        str(script),
        cwd=str(cwd),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group: a timeout ends what it started too
    )
    collected: list[str] = []

    async def pump(stream: asyncio.StreamReader | None, sink: Any) -> None:
        assert stream is not None
        async for raw in stream:
            line = raw.decode("utf-8", "replace")
            collected.append(line)
            sink.write(line)

    try:
        await asyncio.gather(pump(process.stdout, sys.stdout), pump(process.stderr, sys.stderr))
        status = await process.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):  # nothing it started outlives its run
            os.killpg(process.pid, signal.SIGKILL)
        if process.returncode is None:  # timed out or cancelled
            await process.wait()
    return "".join(collected), status


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


async def _upload(outputs: list[ScriptOutput], ctx: Context, out_dir: Path) -> list[str]:
    files = _files(out_dir)
    written: list[str] = []
    for file in files:
        name = file.relative_to(out_dir).as_posix()
        for target in outputs:
            if target.file_prefix and not any(name.startswith(p) for p in target.file_prefix):
                continue
            if target.file_suffix and not any(name.endswith(s) for s in target.file_suffix):
                continue
            key = posixpath.join(target.prefix.strip("/"), name) if target.prefix else name
            written.append(await _put(ctx, target.bucket, key, file))
        if ctx.output is not None:
            key = ctx.output["key"] if len(files) == 1 else f"{ctx.output['key']}/{name}"
            written.append(await _put(ctx, ctx.output["bucket"], key, file))
    return written


async def _put(ctx: Context, bucket: str, key: str, file: Path) -> str:
    kind = mimetypes.guess_type(key)[0] or "application/octet-stream"
    data = await asyncio.to_thread(file.read_bytes)
    await ctx.storage.put(bucket, key, data, content_type=kind)
    return f"{bucket}/{key}"


def _response(out_dir: Path, output: str) -> str:
    """As OSCAR answers a sync run: one output file in base64, several zipped, else the output."""
    files = _files(out_dir)
    if len(files) == 1:
        return base64.b64encode(files[0].read_bytes()).decode()
    if files:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for file in files:
                archive.write(file, file.relative_to(out_dir).as_posix())
        return base64.b64encode(buffer.getvalue()).decode()
    return output
