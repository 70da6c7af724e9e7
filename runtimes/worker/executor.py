"""Running one invocation of a loaded function: validate, call with a deadline, capture logs."""

from __future__ import annotations

import asyncio
import contextvars
import io
import logging
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import orjson

from eventbus.errors import DeepfaasError, InvalidFormError
from runtimes.context import MAX_INLINE_RESULT_BYTES, ActivationStatus, Context
from runtimes.worker.loader import LoadedFunction

if TYPE_CHECKING:  # pydantic loads with a handler that declares types (the loader's adapters)
    from pydantic import TypeAdapter

#: error codes that mean "this input cannot succeed" (bad data, unknown or foreign object):
#: the activation is `invalid`, not retried
INPUT_ERROR_CODES = frozenset({"invalid", "not_found", "bad_request", "forbidden"})
MAX_LOG_LINES = 1000
#: the longest error code a record keeps
MAX_ERROR_CODE = 64
MAX_LOG_LINE = 4096
#: the logs of one activation, in all: the record must stay well under the bus's 1 MiB
MAX_LOG_BYTES = 256 * 1024


class _Sink:
    """Log lines of one activation; writes are joined into lines as print() splits them."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.partial: dict[str, str] = {}
        self.size = 0
        self.full = False

    def write(self, stream: str, text: str) -> None:
        if self.full:
            return
        buffered = self.partial.pop(stream, "") + text
        if len(buffered) > MAX_LOG_LINE and "\n" not in buffered[:MAX_LOG_LINE]:
            buffered = buffered[:MAX_LOG_LINE] + "\n"  # one huge unbroken write: keep its head
        *complete, rest = buffered.split("\n")
        for line in complete:
            self.add(stream, line)
        if rest:
            self.partial[stream] = rest

    def add(self, stream: str, line: str) -> None:
        if self.full:
            return
        entry = f"{_stamp()} {stream}: {line[:MAX_LOG_LINE]}"
        if len(self.lines) >= MAX_LOG_LINES or self.size + len(entry) > MAX_LOG_BYTES:
            # As OpenWhisk does: the run goes on, its logs stop with a note saying why.
            self.full = True
            self.lines.append(
                f"{_stamp()} {stream}: [logs truncated: over {MAX_LOG_LINES} lines or "
                f"{MAX_LOG_BYTES // 1024} KiB]"
            )
            return
        self.size += len(entry)
        self.lines.append(entry)

    def close(self) -> list[str]:
        for stream, rest in list(self.partial.items()):
            self.add(stream, rest)
        self.partial.clear()
        return self.lines


_sink: contextvars.ContextVar[_Sink | None] = contextvars.ContextVar(
    "deepfaas_log_sink", default=None
)


@dataclass
class Outcome:
    """What one run produced."""

    status: ActivationStatus
    result: Any = None
    error: str | None = None
    #: the code of the platform error (`DeepfaasError`) the handler raised
    error_code: str | None = None
    error_detail: Any = None
    logs: list[str] = field(default_factory=list)
    start: datetime = field(default_factory=lambda: datetime.now(UTC))
    duration_ms: float = 0.0
    #: the run hit a limit of its sandbox: another try would hit it again
    final: bool = False
    #: the process that ran it should be replaced before the next run (a limit was hit)
    recycle: bool = False

    @property
    def retryable(self) -> bool:
        """Only a handler that raised is worth another try; bad input, timeouts, limits not."""
        return self.status is ActivationStatus.ERROR and not self.final


def error_code(value: object) -> str | None:
    """An error code as a record keeps it: a short word, or none (a handler's, or a sandboxed
    runner's, may be anything)."""
    if isinstance(value, str) and 0 < len(value) <= MAX_ERROR_CODE and value.isidentifier():
        return value
    return None


def _stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class _CapturingStream(io.TextIOBase):
    """Sends writes to the current activation's log when there is one, else to the real stream."""

    def __init__(self, original: TextIO, name: str) -> None:
        self.original = original
        self.stream_name = name

    def write(self, text: str) -> int:
        sink = _sink.get()
        if sink is None:
            return self.original.write(text)
        sink.write(self.stream_name, text)
        return len(text)

    def flush(self) -> None:
        self.original.flush()


class _SinkHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        sink = _sink.get()
        if sink is not None:
            sink.add("stderr", f"{record.levelname} {record.getMessage()}")


_installed = False


def install_capture() -> None:
    """Route print() and function loggers into activation logs (once per process)."""
    global _installed
    if _installed:
        return
    sys.stdout = _CapturingStream(sys.stdout, "stdout")
    sys.stderr = _CapturingStream(sys.stderr, "stderr")
    fn_logger = logging.getLogger("deepfaas.fn")
    fn_logger.addHandler(_SinkHandler())
    fn_logger.setLevel(logging.DEBUG)
    fn_logger.propagate = False
    _installed = True


class FunctionExecutor(Protocol):
    """Runs a function's activations: in this process (`Executor`) or in a sandbox."""

    #: runs that passed their deadline and still hold a thread (in-process only)
    abandoned: int

    async def run(self, body: bytes, content_type: str | None, ctx: Context) -> Outcome:
        """Validate, run before the deadline, shape the result."""
        ...

    async def close(self) -> None:
        """Release threads or processes."""
        ...


class Executor:
    """Runs invocations of one function with its timeout; sync handlers run in threads."""

    def __init__(
        self,
        loaded: LoadedFunction,
        *,
        threads: int,
        explain: Callable[[BaseException], str | None] | None = None,
    ) -> None:
        self.loaded = loaded
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fn")
        self.abandoned = 0
        #: names the sandbox limit an exception means (memory, processes, files), if any
        self.explain = explain
        #: a form's fields go to a handler that takes a model or a mapping; others get bytes
        self.takes_fields = takes_fields(loaded.input_adapter)
        install_capture()

    def decode_input(self, body: bytes, content_type: str | None) -> Any:
        """JSON bodies become values, forms their fields (if the handler takes fields);
        anything else is passed as bytes."""
        if not body:
            return {}
        if content_type is None or "json" in content_type:
            return orjson.loads(body)
        if self.takes_fields:  # a typed handler: not at a sandboxed runner's start
            from eventbus.forms import decode_form, is_form

            if is_form(content_type):
                return decode_form(body, content_type)
        return body

    async def run(self, body: bytes, content_type: str | None, ctx: Context) -> Outcome:
        """Validate the input, run the handler before its deadline, shape the result."""
        sink = _Sink()
        token = _sink.set(sink)
        started = time.perf_counter()
        outcome = Outcome(status=ActivationStatus.SUCCESS)
        try:
            outcome = await self._run(body, content_type, ctx, outcome)
        finally:
            _sink.reset(token)
            outcome.duration_ms = (time.perf_counter() - started) * 1000
            outcome.logs = sink.close()
        return outcome

    async def _run(
        self, body: bytes, content_type: str | None, ctx: Context, out: Outcome
    ) -> Outcome:
        loaded = self.loaded
        try:
            value = self.decode_input(body, content_type)
        except orjson.JSONDecodeError as exc:
            out.status, out.error = ActivationStatus.INVALID, f"input is not valid JSON: {exc}"
            return out
        except InvalidFormError as exc:
            out.status, out.error = ActivationStatus.INVALID, f"input is not a valid form: {exc}"
            return out
        if loaded.input_adapter is not None:
            from pydantic import ValidationError  # loaded with the adapter

            try:
                value = loaded.input_adapter.validate_python(value)
            except ValidationError as exc:
                out.status = ActivationStatus.INVALID
                out.error = "input failed validation: " + "; ".join(
                    f"{'.'.join(str(p) for p in err['loc']) or '(body)'}: {err['msg']}"
                    for err in exc.errors()
                )
                out.error_detail = orjson.loads(exc.json(include_url=False))
                return out
        args = (value, ctx) if loaded.takes_context else (value,)
        timeout = max(0.001, ctx.deadline - time.time())
        try:
            if loaded.is_async:
                result = await asyncio.wait_for(loaded.handler(*args), timeout)
            else:
                call = contextvars.copy_context().run
                future = asyncio.get_running_loop().run_in_executor(
                    self.pool, call, loaded.handler, *args
                )
                try:
                    result = await asyncio.wait_for(asyncio.shield(future), timeout)
                except TimeoutError:
                    self.abandoned += 1
                    future.add_done_callback(self._reclaimed)
                    raise
        except TimeoutError:
            out.status = ActivationStatus.TIMEOUT
            out.error = f"the function ran past its timeout of {loaded.spec.timeout_s:g} s"
            return out
        except DeepfaasError as exc:
            # A handler's own verdict on its input (bad data, unknown model or version) is
            # final: another try would fail the same way.
            final = exc.code in INPUT_ERROR_CODES
            out.status = ActivationStatus.INVALID if final else ActivationStatus.ERROR
            out.error = str(exc) if final else f"{type(exc).__name__}: {exc}"
            out.error_code = error_code(exc.code)
            out.error_detail = (
                _jsonable(exc.fields) if final else "".join(traceback.format_exception(exc))
            )
            return out
        except Exception as exc:
            out.status = ActivationStatus.ERROR
            out.error = f"{type(exc).__name__}: {exc}"
            out.error_detail = "".join(traceback.format_exception(exc))
            limit = self.explain(exc) if self.explain is not None else None
            if limit is not None:
                out.error, out.final, out.recycle = limit, True, True
            return out
        if isinstance(result, bytes | bytearray) and ctx.output is not None:
            out.result = bytes(result)  # written to the trigger's output target as is
            return out
        try:
            out.result = self._dump(result)
            size = len(orjson.dumps(out.result))
        except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            out.status = ActivationStatus.ERROR
            out.error = f"the function's result is not JSON-serialisable: {exc}"
            out.result = None
            return out
        if size > MAX_INLINE_RESULT_BYTES:
            out.status = ActivationStatus.ERROR
            out.error = (
                f"the result is {size} bytes, over the {MAX_INLINE_RESULT_BYTES}-byte "
                "inline limit: "
                "write large outputs to storage and return a reference"
            )
            out.result = None
        return out

    def _dump(self, result: Any) -> Any:
        adapter = self.loaded.output_adapter
        pydantic = sys.modules.get("pydantic")  # a model exists only once pydantic is loaded
        if pydantic is not None and isinstance(result, pydantic.BaseModel):
            return result.model_dump(mode="json")
        if adapter is not None:
            return adapter.dump_python(adapter.validate_python(result), mode="json")
        return orjson.loads(orjson.dumps(result))

    def _reclaimed(self, _: object) -> None:
        self.abandoned -= 1

    async def close(self) -> None:
        """Stop the thread pool without waiting for abandoned runs."""
        self.pool.shutdown(wait=False, cancel_futures=True)


def takes_fields(adapter: TypeAdapter[Any] | None) -> bool:
    """Whether a handler's declared input is a model, dataclass or mapping (not bytes, not
    untyped): such a handler gets a form's fields rather than its raw body."""
    if adapter is None:
        return False
    schema: Any = adapter.core_schema
    refs = {d.get("ref"): d for d in schema.get("definitions", ())}
    for _ in range(16):  # wrappers around the type itself: validators, defaults, references
        if schema.get("type") == "definition-ref":
            schema = refs.get(schema.get("schema_ref"), {})
        elif "schema" in schema and schema.get("type") not in _FIELD_TYPES:
            schema = schema["schema"]
        else:
            break
    return schema.get("type") in _FIELD_TYPES


_FIELD_TYPES = frozenset({"model", "dataclass", "typed-dict", "dict"})


def _jsonable(fields: dict[str, Any]) -> Any:
    try:
        return orjson.loads(orjson.dumps(fields, default=str))
    except TypeError:
        return {key: str(value) for key, value in fields.items()}
