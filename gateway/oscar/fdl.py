"""OSCAR's service definition (FDL) and what it becomes here: a script function and triggers.

An FDL service names a `script`, an `image` (recorded, for sites that run containers),
`memory`/`cpu` as Kubernetes quantities, `enable_gpu`, `environment.variables` (and
`secrets`), and `input[]`/`output[]` storage paths ``bucket/folder`` with `prefix`/`suffix`
lists. Each input becomes a trigger on the bucket (key prefix ``folder/``); the outputs are the
function's `script_outputs`.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

from eventbus.errors import ValidationFailedError
from eventbus.namespaces import qualify
from eventbus.triggers import BUCKET_PATTERN, Trigger
from runtimes.types import FunctionSpec, ScriptOutput

#: OSCAR's service names: Kubernetes names of at most 39 characters (also our function names)
SERVICE_NAME_PATTERN: Final = r"^[a-z0-9]([a-z0-9-]{0,37}[a-z0-9])?$"
#: the storage providers a service may name: the platform's own store
PROVIDERS: Final = frozenset({"minio", "minio.default"})
#: scripts run under OSCAR's no-retry rule (its jobs have backoffLimit 0) and up to this long
TIMEOUT_S: Final = 900.0
_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|K|M|G|T|m)?$")
_FACTORS: Final = {
    None: 1, "m": 1e-3, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
}  # fmt: skip


class StorageIO(BaseModel):
    """One `input` or `output` entry of a service."""

    model_config = ConfigDict(extra="allow")

    storage_provider: str = "minio.default"
    path: str = Field(min_length=1, max_length=1024, description="`bucket` or `bucket/folder`")
    prefix: list[str] = Field(default_factory=list)
    suffix: list[str] = Field(default_factory=list)

    @field_validator("storage_provider")
    @classmethod
    def _provider(cls, value: str) -> str:
        if value not in PROVIDERS:
            raise ValueError(f"storage provider {value!r} is not available here (only minio)")
        return value

    def bucket_and_folder(self) -> tuple[str, str]:
        """The bucket and the folder inside it (no slashes at the ends)."""
        bucket, _, folder = self.path.strip("/").partition("/")
        if not re.match(BUCKET_PATTERN, bucket):
            raise ValueError(f"path {self.path!r}: {bucket!r} is not a valid bucket name")
        return bucket, folder.strip("/")


class Environment(BaseModel):
    """`environment`: variables and secrets (both reach the script as environment variables)."""

    model_config = ConfigDict(extra="allow")

    variables: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(default_factory=dict)


class Service(BaseModel):
    """An OSCAR service as FDL writes it; fields we do not use are kept as given."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(pattern=SERVICE_NAME_PATTERN)
    image: str = Field(min_length=1, description="recorded for sites that run containers")
    script: str = Field(min_length=1, max_length=1_000_000)
    memory: str = "256Mi"
    cpu: str = "0.2"
    enable_gpu: bool = False
    environment: Environment = Field(default_factory=Environment)
    input: list[StorageIO] = Field(default_factory=list)
    output: list[StorageIO] = Field(default_factory=list)

    @field_validator("cpu", mode="before")
    @classmethod
    def _cpu_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) else value


def parse(body: Any) -> Service:
    """The FDL service of a request body; `ValidationFailedError` says what is wrong."""
    try:
        service = Service.model_validate(body)
        for io in (*service.input, *service.output):
            io.bucket_and_folder()
        memory_mb(service.memory)
        cpus(service.cpu)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise ValidationFailedError(f"The service specification is not valid: {exc}") from exc
    return service


def memory_mb(quantity: str) -> int:
    """A Kubernetes memory quantity in MiB, at least 64."""
    found = _QUANTITY.match(quantity.strip())
    if not found:
        raise ValueError(f"memory {quantity!r} is not a quantity such as 512Mi or 1Gi")
    size = float(found.group(1)) * _FACTORS[found.group(2)]
    mb = max(64, math.ceil(size / (1 << 20)))
    if mb > 262_144:
        raise ValueError(f"memory {quantity!r} is over 256Gi")
    return mb


def cpus(quantity: str) -> float:
    """A Kubernetes CPU quantity as a number of CPUs."""
    found = _QUANTITY.match(quantity.strip())
    if not found or found.group(2) not in (None, "m"):
        raise ValueError(f"cpu {quantity!r} is not a quantity such as 0.5 or 500m")
    value = float(found.group(1)) * _FACTORS[found.group(2)]
    if not 0 < value <= 128:
        raise ValueError(f"cpu {quantity!r} must be over 0 and at most 128")
    return value


def function_spec(service: Service, namespace: str) -> FunctionSpec:
    """The script function that runs the service."""
    outputs = []
    for out in service.output:
        bucket, folder = out.bucket_and_folder()
        outputs.append(
            ScriptOutput(
                bucket=bucket, prefix=folder, file_prefix=out.prefix, file_suffix=out.suffix
            )
        )
    env = {**service.environment.variables, **service.environment.secrets}
    return FunctionSpec.model_validate(
        {
            "name": qualify(namespace, service.name),
            "script": service.script,
            "script_outputs": outputs,
            "description": f"OSCAR service (image {service.image})",
            "memory_mb": memory_mb(service.memory),
            "cpu": cpus(service.cpu),
            "gpu": 1 if service.enable_gpu else 0,
            "env": env,
            "timeout_s": TIMEOUT_S,
            "max_attempts": 1,
            "concurrency": 4,
        }
    )


def triggers(service: Service, namespace: str) -> list[Trigger]:
    """One trigger per input: objects created under ``folder/`` of its bucket."""
    found = []
    for index, entry in enumerate(service.input):
        bucket, folder = entry.bucket_and_folder()
        base = f"{folder}/" if folder else ""
        filters: list[dict[str, Any]] = []
        if entry.prefix:
            alternatives = [{"prefix": {"subject": base + p}} for p in entry.prefix]
            filters.append({"any": alternatives})
        if entry.suffix:
            filters.append({"any": [{"suffix": {"subject": s}} for s in entry.suffix]})
        data: dict[str, Any] = {
            "name": qualify(namespace, trigger_name(service.name, index)),
            "function": qualify(namespace, service.name),
            "description": f"input {index} of OSCAR service {service.name}",
            "bucket": bucket,
            "filters": filters,
        }
        if base:
            data["key_prefix"] = base
        found.append(Trigger.parse(data))
    return found


def trigger_name(service: str, index: int) -> str:
    """The name of the trigger of a service's input ``index``."""
    return f"{service}-input-{index}"


def buckets(service: Service) -> list[str]:
    """Every bucket the service reads or writes."""
    return sorted({io.bucket_and_folder()[0] for io in (*service.input, *service.output)})
