"""Functions: list, create or edit inline code (input schema shown), invoke, versions."""

from __future__ import annotations

from typing import Annotated, Any, Final

import orjson
from fastapi import APIRouter, Form, Path, Request, Response
from nats.js.errors import KeyNotFoundError, NoKeysError

from eventbus.errors import NotFoundError
from eventbus.namespaces import local_name
from eventbus.streams import FUNCTIONS_KV
from gateway.auth.access import namespace, qualified
from gateway.auth.errors import TooManyRequestsError
from gateway.bodies import FunctionSpecIn
from gateway.console.render import FRAGMENTS, FragmentRoute, fragment, json_field
from gateway.routes import functions as api
from gateway.state import state_of
from runtimes.types import FUNCTION_NAME_PATTERN, FunctionSpec

router = APIRouter(
    prefix=f"{FRAGMENTS}/functions", route_class=FragmentRoute, include_in_schema=False
)
Name = Annotated[str, Path(pattern=FUNCTION_NAME_PATTERN, max_length=63)]
TEMPLATE_CODE = '''def main(params):
    """Greet whoever the input names."""
    return {"greeting": f"hello, {params.get('name', 'world')}"}
'''


BLANKS: Final[dict[str, Any]] = {
    "string": "",
    "integer": 0,
    "number": 0,
    "boolean": False,
    "array": [],
    "object": {},
}


def example_input(schema: dict[str, Any] | None) -> str:
    """A JSON input to start from: each property of the schema with its default, its first
    example, or a blank of its type (`{}` without a schema)."""
    properties = (schema or {}).get("properties")
    if not isinstance(properties, dict):
        return "{}"
    example: dict[str, Any] = {}
    for name, prop in properties.items():
        prop = prop if isinstance(prop, dict) else {}
        examples = prop.get("examples")
        if "default" in prop:
            example[name] = prop["default"]
        elif isinstance(examples, list) and examples:
            example[name] = examples[0]
        else:
            kind = prop.get("type")
            example[name] = BLANKS.get(kind, None) if isinstance(kind, str) else None
    return orjson.dumps(example, option=orjson.OPT_INDENT_2).decode()


async def _versions(request: Request, name: str) -> list[FunctionSpec]:
    """The versions the `functions` KV bucket still holds (its history), newest first."""
    kv = await state_of(request).bus.kv(FUNCTIONS_KV)
    try:
        entries = await kv.history(qualified(request, name))
    except (KeyNotFoundError, NoKeysError):
        return []
    found = [FunctionSpec.model_validate_json(e.value) for e in entries if e.value]
    return [api.local(s) for s in sorted(found, key=lambda s: s.version, reverse=True)]


@router.get("")
async def list_functions(request: Request) -> Response:
    """The namespace's functions."""
    return fragment(request, "functions_list.html", functions=await api.list_functions(request))


@router.get("/new")
async def new_function(request: Request) -> Response:
    """An empty editor with a small handler to start from."""
    spec = {"name": "", "handler": "main", "code": TEMPLATE_CODE, "description": ""}
    return fragment(request, "function_edit.html", spec=spec, schema="", new=True)


@router.get("/{name}")
async def show_function(request: Request, name: Name) -> Response:
    """One function: its spec, input schema, invoke form, editor and versions."""
    spec = await api.get_function(request, name)
    return fragment(
        request,
        "function_detail.html",
        spec=spec,
        schema=orjson.dumps(spec.input_schema, option=orjson.OPT_INDENT_2).decode()
        if spec.input_schema
        else "",
        versions=await _versions(request, name),
        example=example_input(spec.input_schema),
    )


@router.post("")
async def save_function(
    request: Request,
    name: Annotated[str, Form(pattern=FUNCTION_NAME_PATTERN, max_length=63)],
    handler: Annotated[str, Form()],
    code: Annotated[str, Form()],
    description: Annotated[str, Form()] = "",
    input_schema: Annotated[str, Form()] = "",
) -> Response:
    """Create the function, or replace its code (its other settings stay)."""
    try:
        current = (await api.get_function(request, name)).model_dump(
            exclude={"name", "version", "created", "updated"}
        )
    except NotFoundError:
        current = {}
    current.update(
        handler=handler.strip(),
        code=code.replace("\r\n", "\n"),
        description=description,
        input_schema=json_field(input_schema, "input_schema"),
    )
    body = FunctionSpecIn.model_validate({**current, "name": name})
    saved = await api.put_function(request, body, Response(), name)
    response = await show_function(request, saved.name)
    response.headers["hx-trigger"] = "df-functions"
    return response


@router.post("/{name}/invoke")
async def invoke(request: Request, name: Name, input: Annotated[str, Form()] = "") -> Response:
    """Run the function with a JSON input and show its record (a sync call, as `/v1` makes)."""
    state = state_of(request)
    spec = state.cache.get(qualified(request, name))
    value = json_field(input, "input")
    body = orjson.dumps(value) if value is not None else b""
    quotas = request.app.state.auth.quotas
    ns = namespace(request)
    if not quotas.enter(ns):
        raise TooManyRequestsError(f"namespace {ns!r} has too many invocations in flight")
    try:
        outcome = await state.invoker.invoke_sync(
            spec, body, content_type="application/json", wait=state.settings.sync_wait_s
        )
    finally:
        quotas.leave(ns)
    state.metrics.accepted.labels(spec.name, "sync").inc()
    record = outcome.record
    return fragment(
        request,
        "invoke_result.html",
        activation_id=outcome.activation_id,
        record=record.model_copy(update={"function": local_name(record.function)})
        if record
        else None,
    )


@router.delete("/{name}")
async def delete_function(request: Request, name: Name) -> Response:
    """Delete the function (its queued invocations go with it)."""
    await api.delete_function(request, name)
    return fragment(request, "deleted.html", what=f"function {name}", trigger="df-functions")
