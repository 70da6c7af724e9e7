"""Contracts of the runtimes: function specs, activation records, handler context."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from eventbus.namespaces import QUALIFIED_NAME_PATTERN, namespace_of

# Re-exported: they live apart so that a sandboxed runner needs no pydantic to start.
from runtimes.context import MAX_INLINE_RESULT_BYTES as MAX_INLINE_RESULT_BYTES
from runtimes.context import ActivationStatus as ActivationStatus
from runtimes.context import Context as Context

FUNCTION_NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,62}$"
HANDLER_PATTERN: Final = (
    r"^([A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:)?[A-Za-z_][A-Za-z0-9_]*$"
)
MAX_CODE_BYTES: Final = 1_000_000
#: the handler of a script function (`FunctionSpec.script`): runs the script with /bin/sh
SCRIPT_HANDLER: Final = "runtimes.worker.script:run"
#: the same handler as specs stored before `runtimes/` was split into packages name it
STORED_SCRIPT_HANDLER: Final = "runtimes.script:run"
#: S3's bucket names (as `eventbus.triggers.BUCKET_PATTERN`, which the runner must not import)
BUCKET_NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"


class ScriptOutput(BaseModel):
    """Where a script function's output files go (OSCAR's `output[]`): bucket, folder, filters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bucket: str = Field(pattern=BUCKET_NAME_PATTERN)
    prefix: str = Field(default="", max_length=512, description="folder inside the bucket")
    file_prefix: list[str] = Field(default_factory=list, description="upload only names so begun")
    file_suffix: list[str] = Field(default_factory=list, description="upload only names so ended")


class FunctionSpec(BaseModel):
    """What a user registers: the code to run and the resources and limits it runs with."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=QUALIFIED_NAME_PATTERN, description="lower-case name (`ns=name` outside default)"
    )
    handler: str = Field(
        pattern=HANDLER_PATTERN,
        description="`module:function` of installed code, or `function` inside `code`",
    )
    code: str | None = Field(
        default=None,
        max_length=MAX_CODE_BYTES,
        description="Python source of the handler's module (inline code, as OpenWhisk actions)",
    )
    script: str | None = Field(
        default=None,
        max_length=MAX_CODE_BYTES,
        description="a shell script run with /bin/sh instead of Python code (OSCAR's `script`); "
        f"the handler is then `{SCRIPT_HANDLER}` (may be left out)",
    )
    script_outputs: list[ScriptOutput] = Field(
        default_factory=list,
        description="where a script's files in $TMP_OUTPUT_DIR are uploaded when it exits",
    )
    description: str = ""
    runtime: str = Field(default="python:3.11", pattern=r"^python:3(\.\d+)?$")
    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    memory_mb: int = Field(default=256, ge=64, le=262_144)
    cpu: float = Field(default=1.0, gt=0, le=128)
    gpu: int = Field(default=0, ge=0, le=16)
    gpu_model: str | None = None
    concurrency: int = Field(default=8, ge=1, le=1000, description="invocations at once per worker")
    min_scale: int = Field(default=0, ge=0, le=100)
    max_scale: int = Field(default=4, ge=1, le=100)
    max_attempts: int = Field(default=3, ge=1, le=20, description="tries of an async invocation")
    env: dict[str, str] = Field(default_factory=dict)
    network: Literal["egress", "none"] = Field(
        default="egress",
        description="`egress`: outbound network as the host has it; `none`: a network "
        "namespace of its own, where nothing is reachable",
    )
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    # managed by the platform
    version: int = Field(default=1, ge=1)
    created: datetime | None = None
    updated: datetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _script_handler(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("script") is None:
            return data
        if data.get("handler", STORED_SCRIPT_HANDLER) == STORED_SCRIPT_HANDLER:
            return {**data, "handler": SCRIPT_HANDLER}
        return data

    @model_validator(mode="after")
    def _check(self) -> FunctionSpec:
        if self.min_scale > self.max_scale:
            raise ValueError("min_scale must not exceed max_scale")
        if self.script is not None and (self.code is not None or self.handler != SCRIPT_HANDLER):
            raise ValueError(f"a script function has no code and its handler is {SCRIPT_HANDLER}")
        if self.script is None and (self.script_outputs or self.handler == SCRIPT_HANDLER):
            raise ValueError(f"script_outputs and the handler {SCRIPT_HANDLER} need a script")
        if self.code is None and ":" not in self.handler:
            raise ValueError("handler must be `module:function` when no code is given")
        return self


class ActivationRecord(BaseModel):
    """The record of one invocation, kept in the `activations` KV bucket under its id."""

    id: str
    function: str
    namespace: str = Field(default="", description="the function's namespace (from its name)")
    version: int
    status: ActivationStatus
    mode: str = Field(description="`sync` or `async`")
    accepted: datetime | None = None
    start: datetime
    end: datetime | None = None
    duration_ms: float | None = None
    wait_ms: float | None = Field(default=None, description="from accepted to start")
    init_ms: float | None = Field(default=None, description="worker start-up, on a cold start")
    cold_start: bool = False
    attempts: int = 1
    result: Any = None
    logs: list[str] = Field(default_factory=list)
    error: str | None = None
    error_code: str | None = Field(
        default=None, description="the code of the platform error the function raised"
    )
    error_detail: Any = None
    cause: str | None = Field(default=None, description="id of the event that caused it")
    output: dict[str, Any] | None = Field(
        default=None, description="where the result was written (bucket, key, size, etag)"
    )
    worker: str | None = None
    annotations: dict[str, Any] = Field(
        default_factory=dict,
        description="what the handler said about its run (e.g. the model version that served it)",
    )

    @model_validator(mode="after")
    def _namespace(self) -> ActivationRecord:
        if not self.namespace:
            self.namespace = namespace_of(self.function)
        return self


class StoredObject(BaseModel):
    """An object in the platform's store, as a storage trigger hands it to a function."""

    bucket: str
    key: str
    size: int | None = None
    etag: str | None = None
    content_type: str | None = None


class GpuRequest(BaseModel):
    """GPUs a runtime needs; `model`/`vendor` constrain placement when given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(default=0, ge=0, le=16)
    model: str | None = None
    vendor: str | None = None


class RuntimeSpec(BaseModel):
    """What a provider provisions: where a function's workers run and with what resources."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=QUALIFIED_NAME_PATTERN, description="runtime name, unique per site")
    function: str = Field(pattern=QUALIFIED_NAME_PATTERN)
    function_version: int = Field(default=1, ge=1)
    image: str | None = Field(default=None, description="container image (kubernetes)")
    module: str | None = Field(default=None, description="`module:function` (local, openwhisk)")
    cpu: float = Field(default=1.0, gt=0, le=128)
    memory_mb: int = Field(default=256, ge=64, le=262_144)
    gpu: GpuRequest = Field(default_factory=GpuRequest)
    env: dict[str, str] = Field(default_factory=dict)
    # the bounds of a function's spec: a deployment asking the local site for 10,000 workers
    # started them (schemathesis found it; the machine stopped answering)
    min_scale: int = Field(default=0, ge=0, le=100)
    max_scale: int = Field(default=1, ge=1, le=100)
    concurrency: int = Field(default=1, ge=1, le=1000)
    labels: dict[str, str] = Field(default_factory=dict)


@dataclass(frozen=True)
class RuntimeHandle:
    """A provisioned runtime on one site, as its provider knows it."""

    site: str
    kind: str
    name: str
    ref: str


class RuntimeStatus(BaseModel):
    """What a provider reports of a runtime: desired, running and ready replicas, why not ready."""

    desired: int
    ready: int
    message: str = Field(default="", description="why not ready: the pending reason, or an error")
    workers: int = Field(default=0, description="replicas running, ready or not (where known)")
    pending: str = Field(default="", description="waiting for capacity (e.g. a free GPU): why")
    gpus: list[int] = Field(default_factory=list, description="GPU indexes its workers hold")

    @property
    def is_ready(self) -> bool:
        return self.ready >= max(self.desired, 1) if self.desired else True
