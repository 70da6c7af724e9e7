"""Our OpenAPI 3.1 document, down-converted to the Swagger 2.0 that DEEPaaS serves.

DEEPaaS clients and the DEEP dashboard read `/swagger.json` (Swagger 2.0, as aiohttp-apispec
writes it) and build their forms from each operation's `parameters`: query arguments, and a
`formData` parameter of type `file` for uploads. Only what those readers use is converted:
parameters, request bodies (multipart as `formData`, JSON as one `body`), JSON responses and the
schemas they reference; nullable unions become their non-null type.
"""

from __future__ import annotations

from typing import Any, Final

SCHEMA_KEYS: Final = (
    "type",
    "format",
    "enum",
    "default",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "items",
    "minItems",
    "maxItems",
    "description",
)
METHODS: Final = ("get", "put", "post", "delete", "patch", "head", "options")


def schema(node: Any) -> Any:
    """A JSON Schema (OpenAPI 3.1 dialect) in Swagger 2.0's subset, recursively."""
    if isinstance(node, list):
        return [schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return {"$ref": str(node["$ref"]).replace("#/components/schemas/", "#/definitions/")}
    for union in ("anyOf", "oneOf"):
        choices = node.get(union)
        if isinstance(choices, list):
            solid = [c for c in choices if not (isinstance(c, dict) and c.get("type") == "null")]
            rest = {k: v for k, v in node.items() if k != union}
            if len(solid) == 1:
                return {**schema(solid[0]), **schema(rest), "x-nullable": len(solid) < len(choices)}
            # Swagger 2.0 has no unions: kept as a vendor extension, for readers that know it
            return {**schema(rest), f"x-{union}": schema(choices)}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "type" and isinstance(value, list):
            kinds = [v for v in value if v != "null"]
            out["type"] = kinds[0] if kinds else "string"
        elif key in ("const", "examples", "$defs", "discriminator"):
            continue
        elif key == "exclusiveMinimum" and not isinstance(value, bool):
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum" and not isinstance(value, bool):
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: schema(sub) for name, sub in value.items()}
        else:
            out[key] = schema(value)
    return out


def _flat(where: str, name: str, sub: dict[str, Any], required: bool) -> dict[str, Any]:
    """A non-body parameter: the schema's keys inline, as Swagger 2.0 wants them."""
    converted = schema(sub)
    if "$ref" in converted or converted.get("type") in (None, "object"):
        converted = {"type": "string", "description": converted.get("description", "")}
    param: dict[str, Any] = {"in": where, "name": name, "required": required}
    if where == "formData" and converted.get("format") == "binary":
        param["type"] = "file"
        if converted.get("description"):
            param["description"] = converted["description"]
        return param
    param.update({k: converted[k] for k in SCHEMA_KEYS if k in converted})
    if param.get("type") == "array" and "items" not in param:
        param["items"] = {"type": "string"}
    return param


def operation(op: dict[str, Any]) -> dict[str, Any]:
    """One operation in Swagger 2.0."""
    params = [
        _flat(p["in"], p["name"], p.get("schema", {}), bool(p.get("required")))
        | ({"description": p["description"]} if p.get("description") else {})
        for p in op.get("parameters", [])
        if p.get("in") in ("query", "path", "header")
    ]
    consumes: list[str] = []
    content = (op.get("requestBody") or {}).get("content", {})
    form = content.get("multipart/form-data", {}).get("schema")
    if isinstance(form, dict) and form.get("properties"):
        required = set(form.get("required", []))
        params += [
            _flat("formData", name, sub, name in required)
            for name, sub in form["properties"].items()
        ]
        consumes.append("multipart/form-data")
    elif "application/json" in content:
        body = schema(content["application/json"].get("schema", {"type": "object"}))
        needed = bool((op.get("requestBody") or {}).get("required"))
        params.append({"in": "body", "name": "body", "required": needed, "schema": body})
        consumes.append("application/json")
    responses: dict[str, Any] = {}
    for code, answer in op.get("responses", {}).items():
        entry: dict[str, Any] = {"description": answer.get("description", "")}
        found = answer.get("content", {}).get("application/json", {}).get("schema")
        if found:
            entry["schema"] = schema(found)
        responses[str(code)] = entry
    out: dict[str, Any] = {
        "responses": responses,
        "parameters": params,
        "tags": list(dict.fromkeys(op.get("tags", []))),
        "summary": op.get("summary", ""),
        "produces": ["application/json"],
    }
    if consumes:
        out["consumes"] = consumes
    for key in ("description", "operationId"):
        if op.get(key):
            out[key] = op[key]
    return out


def _referenced(node: Any, found: set[str]) -> None:
    """The names of the definitions ``node`` refers to (not following them)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            found.add(ref.removeprefix("#/definitions/"))
        for value in node.values():
            _referenced(value, found)
    elif isinstance(node, list):
        for value in node:
            _referenced(value, found)


def _definitions(paths: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """The schemas ``paths`` use, with those they use in turn, converted."""
    wanted: set[str] = set()
    _referenced(paths, wanted)
    out: dict[str, Any] = {}
    while wanted - set(out):
        for name in sorted(wanted - set(out)):
            out[name] = schema(schemas.get(name, {"type": "object"}))
            _referenced(out[name], wanted)
    return dict(sorted(out.items()))


def swagger2(openapi: dict[str, Any], *, wanted: tuple[str, ...], docs_url: str) -> dict[str, Any]:
    """The paths of ``openapi`` equal to or under one of ``wanted``, as a Swagger 2.0 document.

    ``docs_url`` (absolute, as Swagger 2.0 wants it) points readers to the whole API.
    """
    paths: dict[str, Any] = {}
    for path, item in openapi.get("paths", {}).items():
        if not any(path == w or (w != "/" and path.startswith(w + "/")) for w in wanted):
            continue
        paths[path] = {m: operation(op) for m, op in item.items() if m in METHODS}
    info = openapi.get("info", {})
    return {
        "swagger": "2.0",
        "info": {
            "title": info.get("title", ""),
            "version": info.get("version", ""),
            "description": info.get("summary") or info.get("description", ""),
        },
        "externalDocs": {"description": "the whole API (OpenAPI 3.1)", "url": docs_url},
        "paths": paths,
        "definitions": _definitions(paths, openapi.get("components", {}).get("schemas", {})),
    }
