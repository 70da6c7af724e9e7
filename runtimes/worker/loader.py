"""Turning a function spec into a callable: import the module (or inline code), inspect types."""

from __future__ import annotations

import importlib
import inspect
import linecache
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from runtimes.errors import FunctionLoadError

if TYPE_CHECKING:  # pydantic loads only for a handler that declares types (see `_adapter`)
    from pydantic import TypeAdapter


class HandlerSpec(Protocol):
    """What loading and running a handler read of its spec: a `FunctionSpec`, or the plain
    copy a sandboxed runner holds (`runtimes.sandbox.types.RunnerSpec`)."""

    @property
    def name(self) -> str: ...
    @property
    def handler(self) -> str: ...
    @property
    def code(self) -> str | None: ...
    @property
    def script(self) -> str | None: ...
    @property
    def version(self) -> int: ...
    @property
    def timeout_s(self) -> float: ...
    @property
    def concurrency(self) -> int: ...


@dataclass(frozen=True)
class LoadedFunction:
    """A handler ready to call, with the adapters that validate its input and dump its output."""

    spec: HandlerSpec
    handler: Callable[..., Any]
    is_async: bool
    takes_context: bool
    input_adapter: TypeAdapter[Any] | None
    output_adapter: TypeAdapter[Any] | None

    def input_schema(self) -> dict[str, Any] | None:
        """JSON Schema of the input model, when the handler declares one."""
        return self.input_adapter.json_schema() if self.input_adapter else None

    def output_schema(self) -> dict[str, Any] | None:
        """JSON Schema of the output model, when the handler declares one."""
        return self.output_adapter.json_schema() if self.output_adapter else None


def load_function(spec: HandlerSpec) -> LoadedFunction:
    """Import the spec's handler; `FunctionLoadError` says what went wrong."""
    if spec.script is not None:
        from runtimes.types import FunctionSpec
        from runtimes.worker.script import load_script  # it imports this module

        if not isinstance(spec, FunctionSpec):  # a script's outputs are in the full spec only
            raise FunctionLoadError(
                "a script function loads from its full spec", function=spec.name
            )
        return load_script(spec)
    module_name, _, attr = spec.handler.rpartition(":")
    if spec.code is not None:
        module = _module_from_code(spec, module_name or f"deepfaas_fn_{spec.name}")
    else:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise FunctionLoadError(
                f"cannot import module {module_name!r}: {exc}", function=spec.name
            ) from exc
    handler = getattr(module, attr, None)
    if handler is None or not callable(handler):
        raise FunctionLoadError(
            f"module {module_name or '<code>'!r} has no callable {attr!r}", function=spec.name
        )
    return inspect_handler(spec, handler)


def inspect_handler(spec: HandlerSpec, handler: Callable[..., Any]) -> LoadedFunction:
    """Read the handler's signature: input model from the first parameter, output from return."""
    try:
        hints = typing.get_type_hints(handler)
    except Exception as exc:
        raise FunctionLoadError(f"cannot resolve the handler's type hints: {exc}") from exc
    params = [
        p
        for p in inspect.signature(handler).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if not params:
        raise FunctionLoadError("the handler must take its input as the first parameter")
    input_type = hints.get(params[0].name)
    output_type = hints.get("return")
    return LoadedFunction(
        spec=spec,
        handler=handler,
        is_async=inspect.iscoroutinefunction(handler),
        takes_context=len(params) >= 2,
        input_adapter=_adapter(input_type),
        output_adapter=_adapter(output_type),
    )


def _adapter(annotation: Any) -> TypeAdapter[Any] | None:
    if annotation is None or annotation is Any or annotation is inspect.Parameter.empty:
        return None
    if (
        _is_model(annotation)
        or annotation in (dict, list, str, int, float, bool)
        or typing.get_origin(annotation)
    ):
        from pydantic import TypeAdapter

        return TypeAdapter(annotation)
    return None


def _is_model(annotation: Any) -> bool:
    """Whether ``annotation`` is a pydantic model: never, unless some module imported pydantic
    (a handler typed with ``bytes`` or nothing leaves it unloaded)."""
    pydantic = sys.modules.get("pydantic")
    return (
        pydantic is not None
        and isinstance(annotation, type)
        and issubclass(annotation, pydantic.BaseModel)
    )


def _module_from_code(spec: HandlerSpec, name: str) -> types.ModuleType:
    filename = f"<function {spec.name} v{spec.version}>"
    source = spec.code or ""
    module = types.ModuleType(name)
    module.__file__ = filename
    sys.modules[name] = module
    # Registered so that tracebacks of inline code show its source lines.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    try:
        exec(compile(source, filename, "exec"), module.__dict__)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise FunctionLoadError(
            f"the function's code failed to load: {type(exc).__name__}: {exc}", function=spec.name
        ) from exc
    return module


def failing_function(spec: HandlerSpec, error: FunctionLoadError) -> LoadedFunction:
    """A stand-in whose every run fails with the load error, so callers learn why."""

    def _fail(_: Any) -> Any:
        raise FunctionLoadError(f"the function failed to load: {error}", function=spec.name)

    return LoadedFunction(
        spec=spec,
        handler=_fail,
        is_async=False,
        takes_context=False,
        input_adapter=None,
        output_adapter=None,
    )


def check_syntax(spec: HandlerSpec) -> str | None:
    """A syntax error in inline code (line and message), found without running it."""
    if spec.code is None:
        return None
    try:
        compile(spec.code, f"<function {spec.name}>", "exec")
    except SyntaxError as exc:
        return f"line {exc.lineno}: {exc.msg}"
    return None
