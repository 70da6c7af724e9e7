"""The OpenWhisk REST shapes we accept (actions, packages, triggers, rules) and the kinds we run."""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

#: `exec.kind` values we run; each means the platform's Python
SUPPORTED_KINDS: Final = ("python:3", "python:3.11", "python:default")
DEFAULT_KIND: Final = "python:3.11"
#: the event a trigger fire puts on the bus; rules are triggers on it
FIRED_TYPE_SUFFIX: Final = "openwhisk.trigger.fired"


class KeyValue(BaseModel):
    """OpenWhisk's `{key, value}` pair (parameters, annotations)."""

    key: str
    value: Any = None


class Exec(BaseModel):
    """What an action runs: inline Python `code` defining `main(args)` (or `exec.main`)."""

    model_config = ConfigDict(extra="allow")

    kind: str
    code: str | None = None
    main: str | None = None
    binary: bool = False
    #: a sequence's actions, `/ns/[pkg/]name` each
    components: list[str] | None = None


class Limits(BaseModel):
    """Action limits: `timeout` in ms, `memory` in MB, `concurrency` per worker."""

    model_config = ConfigDict(extra="allow")

    timeout: int | None = Field(default=None, description="milliseconds")
    memory: int | None = Field(default=None, description="MB")
    concurrency: int | None = None
    logs: int | None = None


class ActionIn(BaseModel):
    """An action as `PUT /actions/{name}` sends it."""

    model_config = ConfigDict(extra="allow")

    namespace: str | None = None
    name: str | None = None
    exec: Exec | None = None
    parameters: list[KeyValue] = Field(default_factory=list)
    annotations: list[KeyValue] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)
    publish: bool = False


class TriggerIn(BaseModel):
    """A trigger as `PUT /triggers/{name}` sends it."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    parameters: list[KeyValue] = Field(default_factory=list)
    annotations: list[KeyValue] = Field(default_factory=list)
    publish: bool = False


class Binding(BaseModel):
    """What a package binding binds to: a package of the caller's namespace."""

    namespace: str = "_"
    name: str


class PackageIn(BaseModel):
    """A package (or a binding) as `PUT /packages/{name}` sends it."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    namespace: str | None = None
    binding: Binding | dict[str, Any] | None = None
    parameters: list[KeyValue] = Field(default_factory=list)
    annotations: list[KeyValue] = Field(default_factory=list)
    publish: bool = False


class RuleIn(BaseModel):
    """A rule as `PUT /rules/{name}` sends it: `trigger` and `action` as names or paths."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    trigger: str
    action: str
    status: str | None = None
    annotations: list[KeyValue] = Field(default_factory=list)


class RuleStatusIn(BaseModel):
    """`POST /rules/{name}` to enable or disable a rule."""

    status: str = Field(pattern=r"^(active|inactive)$")
