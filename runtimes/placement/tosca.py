"""TOSCA runtime templates: parse offline with tosca-parser and map them to `RuntimeSpec`s."""

from __future__ import annotations

import copy
import logging
import math
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pydantic
import yaml
from toscaparser.common.exception import ExceptionCollector
from toscaparser.elements.scalarunit import ScalarUnit_Size
from toscaparser.parameters import Input
from toscaparser.tosca_template import ToscaTemplate

from runtimes.errors import TemplateError
from runtimes.types import RuntimeSpec

log = logging.getLogger(__name__)

TOSCA_DIR: Final = Path(__file__).resolve().parents[2] / "infra" / "tosca"
TYPES_DIR: Final = TOSCA_DIR / "types"
TEMPLATES_DIR: Final = TOSCA_DIR / "templates"
FUNCTION_TYPE: Final = "deepfaas.nodes.Function"
JOB_TYPE: Final = "deepfaas.nodes.TrainingJob"
COMPUTE_TYPE: Final = "deepfaas.nodes.Compute"
MODEL_TYPE: Final = "deepfaas.nodes.Model"
HOST_PROPERTIES: Final = frozenset(
    {"num_cpus", "mem_size", "disk_size", "num_gpus", "gpu_vendor", "gpu_model"}
)
MAX_TEMPLATE_BYTES: Final = 1_000_000

_VERSIONS: Final = ("tosca_simple_yaml_1_0", "tosca_simple_yaml_1_2", "tosca_simple_yaml_1_3")
# fmt: off
_TYPE_SECTIONS: Final = ("node_types", "capability_types", "relationship_types", "data_types",
                         "interface_types", "policy_types", "group_types", "artifact_types")
_PY_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "string": (str,), "integer": (int,), "float": (int, float), "boolean": (bool,),
    "list": (list,), "map": (dict,),
}
# RuntimeSpec field -> (template property, on the host node?); other fields keep their name
_SPEC_SOURCE: Final = {
    "gpu.count": ("num_gpus", True), "gpu.model": ("gpu_model", True),
    "gpu.vendor": ("gpu_vendor", True), "cpu": ("num_cpus", True),
    "memory_mb": ("mem_size", True), "module": ("handler", False),
}
# fmt: on
_IMPORTED_SECTIONS: Final = frozenset(
    {"tosca_definitions_version", "description", "metadata", "imports", *_TYPE_SECTIONS}
)
_URL: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*:|//|\\\\)")
_SIZE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*$")
_SIZE_MB: Final[dict[str, float]] = {
    k.lower(): v / 1e6 for k, v in ScalarUnit_Size.SCALAR_UNIT_DICT.items()
}
_SECTION_WORDS: Final = frozenset({"properties", "capabilities", "requirements", "interfaces"})
_ABSENT: Final = object()
_YAML_LOADER: Final = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml is 10x faster
# tosca-parser keeps its errors in a class-level ExceptionCollector: one parse at a time.
_PARSE_LOCK: Final = threading.Lock()


@dataclass(frozen=True)
class Topology:
    """A parsed runtime template: its runtime specs, resolved inputs, metadata and outputs."""

    name: str
    runtimes: tuple[RuntimeSpec, ...]
    inputs: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    outputs: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


def parse_template(
    source: Path | str, inputs: Mapping[str, Any] | None = None, *, types_dir: Path | None = None
) -> list[RuntimeSpec]:
    """Parse a TOSCA template (a file `Path` or YAML text) into the runtime specs it asks for."""
    return list(load_topology(source, inputs, types_dir=types_dir).runtimes)


def load_topology(
    source: Path | str, inputs: Mapping[str, Any] | None = None, *, types_dir: Path | None = None
) -> Topology:
    """Parse a TOSCA template offline; imports must be local files under its dir or `types_dir`.

    A `Path` is read as a file; a `str` is the template's YAML text, whose relative imports
    resolve against `types_dir` (default `infra/tosca/types`). Raises `TemplateError`.
    """
    started = time.perf_counter()
    types_root = (types_dir or TYPES_DIR).resolve()
    if isinstance(source, Path):
        label, base = str(source), source.resolve().parent
        doc = _read_yaml(source, label)
        allowed: tuple[Path, ...] = (base, types_root)
    else:
        label, base, allowed = "<text>", types_root, (types_root,)
        doc = _parse_yaml(source, label)
    _check_version(doc, label)
    _merge_types(doc, _load_imports(doc, base, allowed, label, set()), label)
    topo = doc.get("topology_template") or {}
    if not isinstance(topo, dict):
        raise _error(label, "topology_template must be a mapping")
    raw_nodes = topo.get("node_templates") or {}
    values = _resolve_inputs(topo.get("inputs") or {}, dict(inputs or {}), raw_nodes, label)
    nodes = topo["node_templates"] = _fill(raw_nodes, values, label, [])
    outputs = _fill(topo.get("outputs") or {}, values, label, ["outputs"])
    metadata = dict(doc.get("metadata") or {})
    name = str(metadata.get("template_name") or doc.get("template_name") or _stem(source))
    params = {k: v for k, v in values.items() if v is not None}
    tosca = _run_parser(copy.deepcopy(doc), params, label, nodes)
    runtimes = tuple(_runtimes(tosca, name, label))
    elapsed_ms = 1e3 * (time.perf_counter() - started)
    log.debug("parsed %s: %d runtimes in %.1f ms", label, len(runtimes), elapsed_ms)
    description = str(doc.get("description") or "").strip()
    return Topology(name, runtimes, values, metadata, outputs, description)


def offer_error(spec: RuntimeSpec, prop: str, detail: str) -> TemplateError:
    """A `TemplateError` naming the node and property of `spec` that no site can satisfy."""
    node = spec.labels.get("tosca-host" if prop in HOST_PROPERTIES else "tosca-node", spec.name)
    template = spec.labels.get("tosca-template", spec.name)
    return _error(template, f"{detail} (runtime {spec.name!r})", node, prop, runtime=spec.name)


# --- reading YAML and imports -------------------------------------------------------------


def _read_yaml(path: Path, label: str) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_TEMPLATE_BYTES:
            raise _error(label, f"file is larger than {MAX_TEMPLATE_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _error(label, f"cannot read: {exc}") from exc
    return _parse_yaml(text, label)


def _parse_yaml(text: str, label: str) -> dict[str, Any]:
    if len(text) > MAX_TEMPLATE_BYTES:
        raise _error(label, f"template is larger than {MAX_TEMPLATE_BYTES} bytes")
    try:
        doc = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise _error(label, f"malformed YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(doc, dict):
        raise _error(label, "not a TOSCA document (a mapping); pass a Path to read a file")
    return doc


def _check_version(doc: Mapping[str, Any], label: str) -> None:
    version = doc.get("tosca_definitions_version")
    if version not in _VERSIONS:
        raise _error(label, f"tosca_definitions_version {version!r} is not one of {_VERSIONS}")


def _import_ref(entry: Any, label: str) -> str:
    """The file an import entry names: `- path`, `- name: path` or `- name: {file: path}`."""
    ref = next(iter(entry.values())) if isinstance(entry, dict) and len(entry) == 1 else entry
    if isinstance(ref, dict):
        if set(ref) - {"file"}:  # a `repository` import resolves to a URL; no namespaces
            raise _error(label, f"import {entry!r}: only `file` is supported", prop="imports")
        ref = ref.get("file")
    if not isinstance(ref, str) or not ref.strip():
        raise _error(label, f"import {entry!r} does not name a file", prop="imports")
    return ref.strip()


def _load_imports(
    doc: Mapping[str, Any], base: Path, allowed: tuple[Path, ...], label: str, seen: set[Path]
) -> dict[str, dict[str, Any]]:
    """Read a document's imports (recursively) and return their type sections merged."""
    entries = doc.get("imports") or []
    if not isinstance(entries, list):
        raise _error(label, "must be a list", prop="imports")
    merged: dict[str, dict[str, Any]] = {section: {} for section in _TYPE_SECTIONS}
    for entry in entries:
        ref = _import_ref(entry, label)
        if _URL.match(ref):  # tosca-parser would fetch it while parsing
            detail = f"import {ref!r} is a URL; only local files are allowed (nothing fetched)"
            raise _error(label, detail, prop="imports", ref=ref)
        path = (base / ref).resolve()
        if not any(path.is_relative_to(root) for root in allowed):
            detail = f"import {ref!r} is outside the allowed dirs {[str(a) for a in allowed]}"
            raise _error(label, detail, prop="imports", ref=ref)
        if path in seen:
            continue
        seen.add(path)
        imported = _read_yaml(path, str(path))
        _check_version(imported, str(path))
        if unknown := sorted(set(imported) - _IMPORTED_SECTIONS):
            raise _error(str(path), f"sections {unknown} are not allowed in an imported file")
        for section, defs in _load_imports(imported, path.parent, allowed, label, seen).items():
            merged[section].update(defs)
        for section in _TYPE_SECTIONS:
            merged[section].update(imported.get(section) or {})
    return merged


def _merge_types(doc: dict[str, Any], types: Mapping[str, dict[str, Any]], label: str) -> None:
    """Put imported types inline, so that tosca-parser never opens a file or a URL itself."""
    doc.pop("imports", None)
    for section, defs in types.items():
        own = doc.get(section) or {}
        if clash := sorted(set(own) & set(defs)):
            raise _error(label, f"{section} {clash} redefine imported types")
        if defs or own:
            doc[section] = {**defs, **own}


# --- inputs ---------------------------------------------------------------------------------


def _resolve_inputs(decls: Any, given: dict[str, Any], nodes: Any, label: str) -> dict[str, Any]:
    """Check request inputs against the template's input definitions; fill in defaults."""
    if not isinstance(decls, dict):
        raise _error(label, "topology_template.inputs must be a mapping")
    if unknown := sorted(set(given) - set(decls)):
        detail = f"unknown input(s) {unknown}; the template declares {sorted(decls)}"
        raise _error(label, detail, input=unknown[0])
    values: dict[str, Any] = {}
    for name, decl in decls.items():
        decl = decl if isinstance(decl, dict) else {}
        value = decl.get("default") if given.get(name) is None else given[name]
        problem = None
        if value is None and decl.get("required", True):
            problem = "is required and has no default"
        elif value is not None:
            problem = _input_problem(name, decl, value)
        if problem:
            node, prop = _first_use(nodes, name)
            raise _error(label, f"input {name!r} {problem}", node, prop, input=name)
        values[name] = value
    return values


def _input_problem(name: str, decl: dict[str, Any], value: Any) -> str | None:
    """Why `value` does not fit input `name`'s type and constraints, or None."""
    kind = str(decl.get("type", "string"))
    expected = _PY_TYPES.get(kind)
    if (expected and not isinstance(value, expected)) or (
        isinstance(value, bool) and kind in ("integer", "float")
    ):
        return f"must be of type {kind}, got {type(value).__name__} {value!r}"
    with _PARSE_LOCK:  # tosca-parser's own checks: scalar units, versions, constraints
        ExceptionCollector.start()
        try:
            spec = Input(name, decl)
            spec.validate(value)
            for constraint in spec.constraints or ():
                constraint.validate(value)
            caught = [str(exc) for exc in ExceptionCollector.getExceptions()]
        except Exception as exc:  # it raises plain TypeErrors on some odd values
            caught = [str(exc)]
        finally:
            ExceptionCollector.stop()
            ExceptionCollector.clear()
    return "; ".join(caught) or None


def _walk(obj: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
    yield path, obj
    children = (
        obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    )
    for key, child in children:
        yield from _walk(child, [*path, str(key)])


def _is_get_input(obj: Any) -> bool:
    return isinstance(obj, dict) and len(obj) == 1 and "get_input" in obj


def _where(path: list[str]) -> tuple[str | None, str | None]:
    """(node, property) of a path under node_templates."""
    props = [path[i + 1] for i, key in enumerate(path[:-1]) if key in _SECTION_WORDS]
    return (path[0] if path else None), props[-1] if props else None


def _first_use(nodes: Any, name: str) -> tuple[str | None, str | None]:
    for path, obj in _walk(nodes, []):
        if _is_get_input(obj) and obj["get_input"] == name:
            return _where(path)
    return None, None


def _fill(obj: Any, values: Mapping[str, Any], label: str, path: list[str]) -> Any:
    """Replace `{get_input: name}` by the input's value; optional inputs left unset drop out."""
    if _is_get_input(obj):
        name = obj["get_input"]
        if not isinstance(name, str) or name not in values:
            node, prop = (None, None) if path[:1] == ["outputs"] else _where(path)
            raise _error(label, f"unknown input {name!r} in {'.'.join(path)}", node, prop)
        return _ABSENT if values[name] is None else values[name]
    if isinstance(obj, dict):
        filled = {k: _fill(v, values, label, [*path, str(k)]) for k, v in obj.items()}
        return {k: v for k, v in filled.items() if v is not _ABSENT}
    if isinstance(obj, list):
        items = [_fill(v, values, label, [*path, str(i)]) for i, v in enumerate(obj)]
        return [v for v in items if v is not _ABSENT]
    return obj


# --- tosca-parser and its errors ----------------------------------------------------------


def _run_parser(doc: dict[str, Any], params: dict[str, Any], label: str, nodes: Any) -> Any:
    """Validate with tosca-parser; turn all it collects into one `TemplateError`."""
    with _PARSE_LOCK:
        try:
            return ToscaTemplate(yaml_dict_tpl=doc, parsed_params=params or None, a_file=False)
        except Exception as exc:  # its ValidationError, or a crash after collecting errors
            found = [str(e).strip().strip("'") for e in ExceptionCollector.getExceptions()]
            messages = found or [str(exc)]
            node, prop = _attribute(messages[0], nodes if isinstance(nodes, dict) else {})
            more = f" (and {len(messages) - 1} more: {'; '.join(messages[1:4])})"
            detail = messages[0] + (more if messages[1:] else "")
            raise _error(label, detail, node, prop, errors=messages) from exc
        finally:
            ExceptionCollector.stop()
            ExceptionCollector.clear()


def _attribute(message: str, nodes: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The node and property a tosca-parser message is about, found from its quoted names."""
    quoted = [q.strip("[]'") for q in re.findall(r'"([^"]*)"', message)]
    node = next((q for q in quoted if q in nodes), None)
    rest = [q for q in quoted if q != node and q not in _SECTION_WORDS]
    names: dict[str, dict[str, str]] = {}
    values: dict[str, dict[str, str]] = {}
    for name in [node] if node else list(nodes):
        tpl = nodes[name] if isinstance(nodes[name], dict) else {}
        names[name] = {str(tpl.get("type")): "type"}
        values[name] = {}
        for path, obj in _walk(tpl, []):
            if path and not path[-1].isdigit():
                names[name].setdefault(path[-1], path[-1])
            if path and isinstance(obj, str | int | float):
                values[name].setdefault(str(obj), str(_where([name, *path])[1]))
    for index in (names, values):  # names first: a value like "1" is too common to trust
        for q in rest:
            for name, found in index.items():
                if q in found:
                    return name, found[q]
    return node, rest[-1] if node and rest else None


# --- mapping to runtime specs -------------------------------------------------------------


def _runtimes(tosca: Any, template: str, label: str) -> Iterator[RuntimeSpec]:
    by_name = {n.name: n for n in tosca.nodetemplates}
    hosted: dict[str, str] = {}
    for node in tosca.nodetemplates:
        if not any(node.is_derived_from(t) for t in (FUNCTION_TYPE, COMPUTE_TYPE, MODEL_TYPE)):
            detail = f"type {node.type!r} is not a deepfaas runtime type"
            raise _error(label, detail, node.name, "type")
        if not node.is_derived_from(FUNCTION_TYPE):
            continue
        host = _target(node, "host", by_name)
        if host is None or not host.is_derived_from(COMPUTE_TYPE):
            raise _error(label, f"requirement must name a {COMPUTE_TYPE} node", node.name, "host")
        if host.name in hosted:
            detail = f"{host.name!r} already hosts {hosted[host.name]!r}; one function per host"
            raise _error(label, detail, node.name, "host")
        hosted[host.name] = node.name
        yield _spec(node, host, _target(node, "model", by_name), template, label)


def _target(node: Any, requirement: str, by_name: Mapping[str, Any]) -> Any:
    for req in node.requirements:
        if requirement in req:
            value = req[requirement]
            return by_name.get(str(value.get("node") if isinstance(value, dict) else value))
    return None


def _spec(node: Any, host: Any, model: Any, template: str, label: str) -> RuntimeSpec:
    cap = host.get_capability("host")

    def prop(owner: Any, name: str, minimum: int | None = None) -> Any:
        value = owner.get_property_value(name)
        who = host.name if owner is cap else owner.name
        if minimum is None or value is None:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise _error(label, f"must be an integer, got {value!r}", who, name)
        if value < minimum:
            raise _error(label, f"must be >= {minimum}, got {value}", who, name)
        return value

    handler, image = prop(node, "handler"), prop(node, "image")
    if not handler and not image:
        raise _error(label, "a handler or an image is needed", node.name, "handler")
    if handler and ":" not in handler:
        raise _error(label, f"must be module:function, got {handler!r}", node.name, "handler")
    workload = "job" if node.is_derived_from(JOB_TYPE) else "service"
    labels = {"tosca-template": template, "tosca-node": node.name, "tosca-host": host.name,
              "tosca-type": node.type, "workload": workload}  # fmt: skip
    if model is not None:
        labels["model"] = str(model.get_property_value("model_name"))
        if (version := model.get_property_value("model_version")) is not None:
            labels["model-version"] = str(version)
    gpu = {"count": prop(cap, "num_gpus", 0) or 0, "model": prop(cap, "gpu_model"),
           "vendor": prop(cap, "gpu_vendor")}  # fmt: skip
    fields: dict[str, Any] = dict(
        name=node.name, function=prop(node, "function"), module=handler, image=image,
        env=prop(node, "env") or {}, labels=labels, gpu=gpu,
        function_version=prop(node, "function_version", 1),
        concurrency=prop(node, "concurrency", 1),
        min_scale=prop(node, "min_scale", 0), max_scale=prop(node, "max_scale", 1),
    )  # fmt: skip
    if (cpus := prop(cap, "num_cpus", 1)) is not None:
        fields["cpu"] = float(cpus)
    if (mem := prop(cap, "mem_size")) is not None:
        fields["memory_mb"] = _megabytes(mem, host.name, label)
    if fields["min_scale"] > fields["max_scale"]:
        raise _error(label, "exceeds max_scale", node.name, "min_scale")
    try:
        return RuntimeSpec(**fields)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(map(str, first["loc"][:2]))
        name, on_host = _SPEC_SOURCE.get(key, (key, False))
        raise _error(label, first["msg"], host.name if on_host else node.name, name) from exc


def _megabytes(size: Any, node: str, label: str) -> int:
    """'16 GB' -> 16000: TOSCA's decimal megabytes (MiB, GiB are binary), rounded up."""
    match = _SIZE.match(str(size))
    factor = _SIZE_MB.get(match.group(2).lower()) if match else None
    if match is None or factor is None:
        raise _error(label, f"is not a size: {size!r}", node, "mem_size")
    return math.ceil(float(match.group(1)) * factor - 1e-9)


def _stem(source: Path | str) -> str:
    return source.stem if isinstance(source, Path) else "template"


def _error(
    label: str, detail: str, node: str | None = None, prop: str | None = None, **fields: Any
) -> TemplateError:
    """One `TemplateError` whose message names the template, node and property."""
    where = "".join(f"{k} {v!r} " for k, v in (("node", node), ("property", prop)) if v)
    message = f"template {label}: {where.rstrip()}{': ' if where else ''}{detail}"
    return TemplateError(message, template=label, node=node, property=prop, **fields)
