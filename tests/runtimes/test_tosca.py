"""TOSCA runtime templates: shipped templates, inputs, offline imports and clear errors."""

from __future__ import annotations

import socket
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from toscaparser.common.exception import ExceptionCollector
from toscaparser.tosca_template import ToscaTemplate

import runtimes.placement.tosca
from runtimes.errors import TemplateError
from runtimes.placement.tosca import (
    TEMPLATES_DIR,
    TYPES_DIR,
    Topology,
    load_topology,
    offer_error,
    parse_template,
)
from runtimes.types import GpuRequest, RuntimeSpec

NETWORK = "network access attempted"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here runs with the network refused; tosca-parser fetches via urllib."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(NETWORK)

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def labels(template: str, node: str, host: str, **extra: str) -> dict[str, str]:
    kind = extra.pop("tosca_type", "deepfaas.nodes.Function")
    workload = extra.pop("workload", "service")
    base = {"tosca-template": template, "tosca-node": node, "tosca-host": host}
    return {**base, "tosca-type": kind, "workload": workload, **extra}


INFERENCE = RuntimeSpec(
    name="inference",
    function="inference",
    module="functions.inference.handler:handle",
    image="ghcr.io/deepfaas/inference:0.1",
    cpu=8.0,
    memory_mb=32_000,
    gpu=GpuRequest(count=1, model="a100", vendor="nvidia"),
    env={"DEEPFAAS_DEVICE": "cuda"},
    min_scale=1,
    max_scale=1,
    concurrency=4,
    labels=labels("inference-gpu", "inference", "gpu_node", model="resnet50"),
)
RANK = RuntimeSpec(
    name="rank",
    function="rank",
    module="functions.rank.handler:handle",
    cpu=2.0,
    memory_mb=2148,  # 2 GiB = 2147.48 MB, rounded up
    env={"LOG_LEVEL": "INFO"},
    min_scale=0,
    max_scale=4,
    concurrency=8,
    labels=labels("function-cpu", "rank", "cpu_node"),
)
RETRAIN = RuntimeSpec(
    name="retrain",
    function="retrain",
    module="functions.retrain.handler:handle",
    image="ghcr.io/deepfaas/retrain:0.1",
    cpu=16.0,
    memory_mb=64_000,
    gpu=GpuRequest(count=2, model="v100", vendor="nvidia"),
    env={"DATASET": "data/train/", "EPOCHS": "10"},
    min_scale=1,
    max_scale=1,
    concurrency=1,
    labels=labels(
        "training-job",
        "retrain",
        "trainer",
        tosca_type="deepfaas.nodes.TrainingJob",
        workload="job",
        model="resnet50",
    ),
)
SHIPPED = {
    "inference_gpu.yaml": ({"model_name": "resnet50"}, [INFERENCE]),
    "function_cpu.yaml": ({}, [RANK]),
    "training_job.yaml": ({"model_name": "resnet50", "dataset": "data/train/"}, [RETRAIN]),
}

# A small template in text form; relative imports in text resolve against TYPES_DIR.
SMALL = """
tosca_definitions_version: tosca_simple_yaml_1_0
imports:
  - deepfaas_types.yaml
topology_template:
  inputs:
    gpus: {type: integer, default: 1}
  node_templates:
    fn:
      type: deepfaas.nodes.Function
      properties: {function: fn, handler: "app.main:handle"}
      requirements:
        - host: node
    node:
      type: deepfaas.nodes.Compute
      capabilities:
        host:
          properties: {num_cpus: 1, mem_size: 512 MB, num_gpus: {get_input: gpus}}
"""


def small(old: str, new: str) -> str:
    """SMALL with one piece of text replaced (which must be there)."""
    assert old in SMALL
    return SMALL.replace(old, new)


def error_of(source: Path | str, inputs: dict[str, Any] | None = None) -> TemplateError:
    with pytest.raises(TemplateError) as info:
        parse_template(source, inputs)
    return info.value


# --- shipped templates ----------------------------------------------------------------------


def test_every_shipped_template_is_covered() -> None:
    assert sorted(p.name for p in TEMPLATES_DIR.glob("*.yaml")) == sorted(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_template_yields_expected_specs(name: str) -> None:
    inputs, expected = SHIPPED[name]
    assert parse_template(TEMPLATES_DIR / name, inputs) == expected


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_template_as_text(name: str) -> None:
    """Text resolves relative imports against types_dir, so `../types/...` still works."""
    inputs, expected = SHIPPED[name]
    assert parse_template((TEMPLATES_DIR / name).read_text(), inputs) == expected


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_template_is_plain_tosca(name: str) -> None:
    """tosca-parser alone, with its own (local) import handling, accepts the shipped files."""
    tosca = ToscaTemplate(str(TEMPLATES_DIR / name), parsed_params=SHIPPED[name][0] or None)
    assert {n.type for n in tosca.nodetemplates} >= {"deepfaas.nodes.Compute"}


def test_topology_keeps_metadata_outputs_and_resolved_inputs() -> None:
    topology = load_topology(TEMPLATES_DIR / "inference_gpu.yaml", {"model_name": "resnet50"})
    assert isinstance(topology, Topology)
    assert topology.name == "inference-gpu"
    assert topology.metadata["template_version"] == "1.0"
    assert topology.outputs["runtime"]["value"] == "inference"
    assert topology.inputs["gpu_model"] == "a100"
    assert topology.inputs["model_version"] is None
    assert "GPU" in topology.description


def test_get_input_filled_from_request() -> None:
    inputs = {
        "model_name": "yolo",
        "model_version": "3",
        "gpu_model": "h100",
        "gpu_vendor": "nvidia",
        "num_gpus": 4,
        "replicas": 3,
    }
    [spec] = parse_template(TEMPLATES_DIR / "inference_gpu.yaml", inputs)
    assert spec.gpu == GpuRequest(count=4, model="h100", vendor="nvidia")
    assert (spec.min_scale, spec.max_scale) == (3, 3)
    assert spec.labels["model"] == "yolo"
    assert spec.labels["model-version"] == "3"


def test_template_as_text_with_types_dir() -> None:
    [spec] = parse_template(SMALL, {"gpus": 2}, types_dir=TYPES_DIR)
    assert spec.gpu.count == 2
    assert spec.memory_mb == 512
    assert spec.module == "app.main:handle"


def test_parses_concurrently() -> None:
    """tosca-parser collects errors in class-level state; parses must not mix them up."""
    interval = sys.getswitchinterval()
    bad = small("num_cpus: 1", "num_cpus: 1, gpu_memory: 16 GB")
    results: list[str] = []

    def work(i: int) -> None:
        for _ in range(5):
            try:
                results.append(parse_template(SMALL if i % 2 else bad)[0].name)
            except TemplateError as exc:
                results.append(str(exc.fields["property"]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    sys.setswitchinterval(1e-5)  # switch threads often, inside tosca-parser too
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert sorted(results) == ["fn"] * 20 + ["gpu_memory"] * 20
    assert not ExceptionCollector.collecting


# --- inputs -------------------------------------------------------------------------------


def test_missing_required_input() -> None:
    error = error_of(TEMPLATES_DIR / "inference_gpu.yaml", {})
    assert error.fields["input"] == "model_name"
    assert (error.fields["node"], error.fields["property"]) == ("model", "model_name")
    assert "input 'model_name' is required" in str(error)


def test_unknown_input() -> None:
    error = error_of(TEMPLATES_DIR / "function_cpu.yaml", {"max_replica": 3})
    assert error.fields["input"] == "max_replica"
    assert "unknown input" in str(error)


@pytest.mark.parametrize(
    ("name", "value", "node"),
    [
        ("num_gpus", "two", "gpu_node"),
        ("num_gpus", True, "gpu_node"),
        ("num_gpus", 1.5, "gpu_node"),
        ("replicas", "1", "inference"),
    ],
)
def test_input_of_wrong_type(name: str, value: object, node: str) -> None:
    error = error_of(TEMPLATES_DIR / "inference_gpu.yaml", {"model_name": "m", name: value})
    assert "must be of type integer" in str(error)
    assert (error.fields["node"], error.fields["input"]) == (node, name)


def test_required_input_given_as_none() -> None:
    error = error_of(TEMPLATES_DIR / "inference_gpu.yaml", {"model_name": None})
    assert error.fields["input"] == "model_name"


def test_input_constraint() -> None:
    error = error_of(TEMPLATES_DIR / "function_cpu.yaml", {"log_level": "LOUD"})
    assert (error.fields["node"], error.fields["property"]) == ("rank", "env")
    assert "LOUD" in str(error)


def test_get_input_of_undeclared_input() -> None:
    text = small('handler: "app.main:handle"', "handler: {get_input: nope}")
    error = error_of(text)
    assert (error.fields["node"], error.fields["property"]) == ("fn", "handler")
    assert "unknown input 'nope'" in str(error)


# --- imports: local only, refused before any network access ---------------------------------


def test_network_guard_catches_tosca_parser_fetching() -> None:
    """Without our check, tosca-parser would fetch a URL import: the guard sees it."""
    tpl = {"tosca_definitions_version": "tosca_simple_yaml_1_0", "imports": ["https://x.test/t"]}
    try:
        with pytest.raises(AssertionError, match=NETWORK):
            ToscaTemplate(yaml_dict_tpl=tpl, a_file=False)
    finally:
        ExceptionCollector.stop()
        ExceptionCollector.clear()


@pytest.mark.parametrize(
    "entry",
    [
        "https://raw.githubusercontent.com/indigo-dc/tosca-types/master/custom_types.yaml",
        "http://example.org/types.yaml",
        "ftp://example.org/types.yaml",
        "file:///etc/passwd",
        "//example.org/types.yaml",
        "{types: {file: 'https://example.org/types.yaml'}}",
        "{types: {file: types.yaml, repository: remote}}",
    ],
)
def test_url_import_refused_before_parsing(monkeypatch: pytest.MonkeyPatch, entry: str) -> None:
    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("tosca-parser was called")

    monkeypatch.setattr(runtimes.placement.tosca, "ToscaTemplate", never)
    text = small("- deepfaas_types.yaml", f"- deepfaas_types.yaml\n  - {entry}")
    error = error_of(text)
    assert error.fields["property"] == "imports"
    assert "import" in str(error)
    assert NETWORK not in str(error)


def test_url_import_nested_in_a_local_import_refused(tmp_path: Path) -> None:
    (tmp_path / "more_types.yaml").write_text(
        "tosca_definitions_version: tosca_simple_yaml_1_0\n"
        "imports:\n  - https://example.org/evil.yaml\n"
    )
    template = tmp_path / "t.yaml"
    template.write_text(small("- deepfaas_types.yaml", "- more_types.yaml"))
    error = error_of(template)
    assert "'https://example.org/evil.yaml' is a URL" in str(error)


def test_import_escaping_allowed_dirs_refused(tmp_path: Path) -> None:
    (tmp_path / "outside.yaml").write_text("tosca_definitions_version: tosca_simple_yaml_1_0\n")
    template = tmp_path / "inner" / "t.yaml"
    template.parent.mkdir()
    template.write_text(small("- deepfaas_types.yaml", "- ../outside.yaml"))
    assert "outside the allowed dirs" in str(error_of(template))
    text = small("- deepfaas_types.yaml", "- ../../../../etc/hosts")
    assert "outside the allowed dirs" in str(error_of(text))


def test_repository_with_url_is_not_fetched() -> None:
    """tosca-parser only checks a repository's URL; with imports inline nothing uses it."""
    text = SMALL + "repositories:\n  hub: {url: 'https://example.org/repo'}\n"
    assert parse_template(text)[0].name == "fn"


def test_redefining_an_imported_type_refused() -> None:
    text = SMALL + "node_types:\n  deepfaas.nodes.Compute:\n    derived_from: tosca.nodes.Root\n"
    assert "redefine imported types" in str(error_of(text))


# --- bad templates: one clear error naming node and property --------------------------------


def test_malformed_yaml() -> None:
    error = error_of(SMALL + "  bad: [unclosed\n")
    assert "malformed YAML" in str(error)
    assert "line" in str(error)


def test_path_given_as_str_explains() -> None:
    error = error_of(str(TEMPLATES_DIR / "function_cpu.yaml"))
    assert "pass a Path" in str(error)


def test_unknown_node_type() -> None:
    error = error_of(small("type: deepfaas.nodes.Compute", "type: deepfaas.nodes.Bogus"))
    assert (error.fields["node"], error.fields["property"]) == ("node", "type")
    assert "deepfaas.nodes.Bogus" in str(error)


def test_tosca_type_that_is_no_runtime() -> None:
    text = SMALL + "    web:\n      type: tosca.nodes.WebServer\n      requirements:\n"
    text += "        - host: node\n"
    error = error_of(text)
    assert (error.fields["node"], error.fields["property"]) == ("web", "type")
    assert "not a deepfaas runtime type" in str(error)


def test_negative_gpu_count_in_template() -> None:
    error = error_of(small("{get_input: gpus}", "-1"))
    assert (error.fields["node"], error.fields["property"]) == ("node", "num_gpus")
    assert "greater than or equal" in str(error)


def test_negative_gpu_count_from_input() -> None:
    """Inputs are filled in before tosca-parser validates, so type constraints apply to them."""
    error = error_of(SMALL, {"gpus": -2})
    assert (error.fields["node"], error.fields["property"]) == ("node", "num_gpus")
    assert '"-2"' in str(error)


def test_negative_gpu_count_without_type_constraint(tmp_path: Path) -> None:
    """Types without the constraint (another types_dir) still get a negative count refused."""
    types = (TYPES_DIR / "deepfaas_types.yaml").read_text()
    constraint = "        constraints:\n          - greater_or_equal: 0\n"
    start = types.index("      num_gpus:")
    assert constraint in types[start : start + 300]
    end = types.index(constraint, start) + len(constraint)
    (tmp_path / "deepfaas_types.yaml").write_text(
        types[:start] + types[start:end].replace(constraint, "") + types[end:]
    )
    with pytest.raises(TemplateError) as info:
        parse_template(SMALL, {"gpus": -2}, types_dir=tmp_path)
    assert (info.value.fields["node"], info.value.fields["property"]) == ("node", "num_gpus")
    assert "must be >= 0, got -2" in str(info.value)


def test_fractional_gpu_count() -> None:
    """tosca-parser accepts 1.5 as an integer; we do not."""
    error = error_of(small("{get_input: gpus}", "1.5"))
    assert (error.fields["node"], error.fields["property"]) == ("node", "num_gpus")
    assert "must be an integer" in str(error)


def test_unknown_property_on_our_capability() -> None:
    error = error_of(small("num_cpus: 1", "num_cpus: 1, gpu_memory: 16 GB"))
    assert (error.fields["node"], error.fields["property"]) == ("node", "gpu_memory")
    assert "unknown field" in str(error)


def test_unknown_property_on_function() -> None:
    error = error_of(small("function: fn", "function: fn, gpus: 2"))
    assert (error.fields["node"], error.fields["property"]) == ("fn", "gpus")


def test_function_without_host() -> None:
    error = error_of(small("      requirements:\n        - host: node\n", ""))
    assert (error.fields["node"], error.fields["property"]) == ("fn", "host")


def test_host_that_is_not_compute() -> None:
    text = small("- host: node", "- host: m")
    text += "    m:\n      type: deepfaas.nodes.Model\n      properties: {model_name: x}\n"
    error = error_of(text)
    assert (error.fields["node"], error.fields["property"]) == ("fn", "host")


@pytest.mark.parametrize(
    ("old", "new", "prop"),
    [
        ('handler: "app.main:handle"', "handler: app", "handler"),
        ('handler: "app.main:handle"', "concurrency: 2", "handler"),
        ("function: fn", "function: fn, min_scale: 3, max_scale: 2", "min_scale"),
        # past a function spec's bounds: the local site started every one of 10,000 workers
        ("function: fn", "function: fn, min_scale: 10000, max_scale: 10000", "min_scale"),
        ("function: fn", "function: fn, max_scale: 101", "max_scale"),
        ("function: fn", "function: fn, concurrency: 100000", "concurrency"),
        ("function: fn", "function: Not_A_Name", "function"),
        ("mem_size: 512 MB", "mem_size: 16 MB", "mem_size"),
        ("{get_input: gpus}", "32", "num_gpus"),
    ],
)
def test_bad_values_name_node_and_property(old: str, new: str, prop: str) -> None:
    error = error_of(small(old, new))
    assert error.fields["property"] == prop
    assert f"property {prop!r}" in str(error)


def test_collector_left_clean_after_errors() -> None:
    error_of(small("num_cpus: 1", "num_cpus: 1, gpu_memory: 16 GB"))
    assert not ExceptionCollector.collecting
    assert not ExceptionCollector.exceptions


# --- what placement needs -------------------------------------------------------------------


def test_offer_error_names_the_node_that_asks() -> None:
    [spec] = parse_template(TEMPLATES_DIR / "inference_gpu.yaml", {"model_name": "m"})
    error = offer_error(spec, "gpu_model", "no site offers gpu_model 'a100'")
    assert (error.fields["node"], error.fields["property"]) == ("gpu_node", "gpu_model")
    assert "node 'gpu_node' property 'gpu_model': no site offers" in str(error)
    error = offer_error(spec, "image", "no site can pull it")
    assert error.fields["node"] == "inference"
