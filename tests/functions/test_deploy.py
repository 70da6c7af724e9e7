"""The `deploy` function's input model and its template/spec -> runtime spec step."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from functions.deploy.handler import to_spec
from functions.deploy.models import DeployInput
from runtimes.errors import TemplateError
from runtimes.placement.tosca import TEMPLATES_DIR

SPEC: dict[str, Any] = {"name": "svc", "function": "svc", "module": "m:f"}


def test_a_template_path_becomes_its_runtime_spec() -> None:
    inp = DeployInput(template_path="inference_gpu.yaml", inputs={"model_name": "digits"})
    spec, source = to_spec(inp)
    assert spec.name == "inference" and spec.gpu.count == 1 and spec.gpu.model == "a100"
    assert source["kind"] == "tosca" and source["inputs"]["model_name"] == "digits"


def test_template_text_and_spec_are_accepted() -> None:
    text = (TEMPLATES_DIR / "function_cpu.yaml").read_text()
    assert to_spec(DeployInput(template=text))[0].function == "rank"
    assert to_spec(DeployInput(spec=SPEC))[0].name == "svc"


@pytest.mark.parametrize(
    "body",
    [{}, {"spec": SPEC, "template_path": "x.yaml"}, {"action": "delete"},
     {"action": "get", "name": "x", "spec": SPEC}, {"spec": {**SPEC, "gpu": {"count": -1}}},
     {"spec": SPEC, "surprise": 1}],
)  # fmt: skip
def test_bad_inputs_fail_validation(body: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        DeployInput.model_validate(body)


def test_a_path_outside_the_templates_dir_is_refused() -> None:
    with pytest.raises(TemplateError, match="not a file under"):
        to_spec(DeployInput(template_path="../types/deepfaas_types.yaml"))


def test_a_url_import_is_refused() -> None:
    text = "tosca_definitions_version: tosca_simple_yaml_1_0\nimports: [http://x.org/t.yaml]\n"
    with pytest.raises(TemplateError, match="is a URL"):
        to_spec(DeployInput(template=text))
