"""The sites of the hybrid cloud: the sites file, its validation, credentials and live figures."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import urlsplit

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from runtimes.errors import CredentialsError, SiteConfigError

if TYPE_CHECKING:
    from runtimes.providers.local import Gpu

log = logging.getLogger(__name__)

SITE_NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
ENV_VAR_PATTERN: Final = r"^[A-Za-z_][A-Za-z0-9_]*$"
MAX_SITES_FILE_BYTES: Final = 1_000_000
# Keys that would hold a secret itself; the sites file may only say where a secret is.
_SECRET_KEYS: Final = frozenset(
    {"secret", "token", "password", "passwd", "api_key", "apikey", "key", "auth", "bearer",
     "client_secret", "private_key", "access_key", "secret_key", "value", "kubeconfig"}
)  # fmt: skip
_HINT: Final = "give a reference instead: {env: VAR} or {file: path}"
_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, hide_input_in_errors=True)


def _invalid(message: str, field: str | None = None, **ctx: Any) -> PydanticCustomError:
    return PydanticCustomError("site_config", message, {"field": field, **ctx})


class SiteKind(StrEnum):
    """The kinds of site a provider exists for."""

    LOCAL = "local"
    KUBERNETES = "kubernetes"
    OPENWHISK = "openwhisk"


class CredentialsRef(BaseModel):
    """Where a site's secret lives: an environment variable or a secret file, never the secret."""

    model_config = _STRICT

    env: str | None = Field(default=None, pattern=ENV_VAR_PATTERN)
    file: str | None = Field(default=None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _no_literal(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise _invalid(f"credentials must be a reference, not a literal value; {_HINT}")
        for key in data:
            if str(key).lower() in _SECRET_KEYS:
                raise _invalid(f"credentials field '{key}' would hold a literal secret; {_HINT}")
            if key not in ("env", "file"):
                raise _invalid(f"unknown credentials field '{key}'; {_HINT}")
        if ("env" in data) == ("file" in data):
            raise _invalid(f"credentials need exactly one of env or file; {_HINT}")
        return data

    def describe(self) -> str:
        """The reference as text, e.g. `env:K8S_TOKEN` (never the secret)."""
        return f"env:{self.env}" if self.env is not None else f"file:{self.file}"


class GpuCapacity(BaseModel):
    """GPUs of one model a site has, and what one of them adds to the hourly cost."""

    model_config = _STRICT

    model: str = Field(min_length=1, description="as sites name it, e.g. a100")
    vendor: str = Field(min_length=1, description="e.g. nvidia, amd")
    count: int = Field(ge=1)
    cost_per_hour: float = Field(default=0.0, ge=0, description="extra cost of one GPU per hour")


class Capacity(BaseModel):
    """What a site offers in all: CPUs, memory and GPUs by model."""

    model_config = _STRICT

    cpus: float = Field(gt=0)
    memory_mb: int = Field(gt=0)
    gpus: tuple[GpuCapacity, ...] = ()


class Sla(BaseModel):
    """The service level a site promises."""

    model_config = _STRICT

    availability: float = Field(ge=0, le=1, description="target availability, e.g. 0.995")
    max_provisioning_s: float | None = Field(default=None, gt=0)


class Site(BaseModel):
    """One site of the hybrid cloud: where it is, how to reach it, what it offers and costs."""

    model_config = _STRICT

    name: str = Field(pattern=SITE_NAME_PATTERN)
    kind: SiteKind
    endpoint: str | None = None
    credentials: CredentialsRef | None = None
    region: str = Field(min_length=1)
    datacentre: str | None = None
    capacity: Capacity
    cost_per_hour: float = Field(default=0.0, ge=0, description="base cost of a placement")
    sla: Sla
    labels: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _no_secret_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for key in data:
                if str(key).lower() in _SECRET_KEYS:
                    raise _invalid(
                        f"field '{key}' would hold a literal secret; {_HINT}",
                        field=str(key),
                    )
        return data

    @field_validator("kind", mode="before")
    @classmethod
    def _known_kind(cls, value: Any) -> Any:
        if value not in {k.value for k in SiteKind}:
            kinds = ", ".join(k.value for k in SiteKind)
            raise _invalid(f"unknown site kind '{value}'; expected one of {kinds}")
        return value

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _invalid("endpoint must be an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise _invalid(f"endpoint must not carry user or password; {_HINT}")
        return value

    @model_validator(mode="after")
    def _check_kind_needs(self) -> Site:
        if self.kind is not SiteKind.LOCAL:
            if self.endpoint is None:
                raise _invalid(f"a {self.kind} site needs an endpoint", field="endpoint")
            if self.credentials is None:
                raise _invalid(
                    f"a {self.kind} site needs a credentials reference; {_HINT}",
                    field="credentials",
                )
        return self


class SitesFile(BaseModel):
    """The sites file: a version and the sites, their names unique."""

    model_config = _STRICT

    version: Literal[1] = 1
    sites: tuple[Site, ...]

    @field_validator("sites")
    @classmethod
    def _unique_names(cls, sites: tuple[Site, ...]) -> tuple[Site, ...]:
        if not sites:
            raise _invalid("the file lists no sites")
        seen: set[str] = set()
        for site in sites:
            if site.name in seen:
                raise _invalid(f"duplicate site name '{site.name}'", field="name", site=site.name)
            seen.add(site.name)
        return sites

    def get(self, name: str) -> Site | None:
        """The site of that name, if any."""
        return next((s for s in self.sites if s.name == name), None)


class SiteFigures(BaseModel):
    """Live figures of a site from the platform's metrics and runtime state; None = unknown."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    free_gpus: dict[str, int] | None = Field(
        default=None, description="free GPUs by model; models are case-folded (a100 = A100)"
    )
    free_cpus: float | None = Field(default=None, ge=0)
    free_memory_mb: int | None = Field(default=None, ge=0)
    queue_wait_ms: float | None = Field(default=None, ge=0)
    recent_failures: int | None = Field(default=None, ge=0, description="provisioning failures")
    utilisation: float | None = Field(default=None, ge=0, le=1)
    reachable: bool = True

    @field_validator("free_gpus")
    @classmethod
    def _fold_models(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        if value is None:
            return None
        folded: dict[str, int] = {}
        for model, n in value.items():
            if n < 0:
                raise ValueError(f"free GPUs of model {model!r} must not be negative")
            folded[model.casefold()] = folded.get(model.casefold(), 0) + n
        return folded


def load_sites(path: Path) -> SitesFile:
    """Read and validate a sites file; `SiteConfigError` names the site and field at fault."""
    try:
        if path.stat().st_size > MAX_SITES_FILE_BYTES:
            raise SiteConfigError(
                f"{path}: larger than {MAX_SITES_FILE_BYTES} bytes", path=str(path)
            )
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SiteConfigError(f"{path}: cannot read: {exc}", path=str(path)) from exc
    except yaml.YAMLError as exc:
        # Only the problem and its place: the YAML error's snippet would echo the file's text.
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise SiteConfigError(f"{path}: not valid YAML{at}: {problem}", path=str(path)) from None
    if not isinstance(doc, dict):
        raise SiteConfigError(
            f"{path}: must be a mapping with `version` and `sites`", path=str(path)
        )
    try:
        sites = SitesFile.model_validate(doc)
    except pydantic.ValidationError as exc:
        problems = [_problem(doc, err) for err in exc.errors()]
        first = problems[0]
        where = f"site '{first['site']}'" if first["site"] is not None else "file"
        field = f", field '{first['field']}'" if first["field"] else ""
        raise SiteConfigError(
            f"{path}: {where}{field}: {first['message']}",
            path=str(path),
            site=first["site"],
            field=first["field"],
            errors=problems,
        ) from exc
    log.debug("loaded %d sites from %s", len(sites.sites), path)
    return sites


def _problem(doc: Mapping[str, Any], err: Mapping[str, Any]) -> dict[str, Any]:
    loc = tuple(err["loc"])
    ctx = err.get("ctx") or {}
    site: str | None = ctx.get("site")
    rest = loc
    if loc[:1] == ("sites",) and len(loc) > 1 and isinstance(loc[1], int):
        raws = doc.get("sites")
        raw = raws[loc[1]] if isinstance(raws, list) and loc[1] < len(raws) else None
        name = raw.get("name") if isinstance(raw, Mapping) else None
        site = str(name) if isinstance(name, str) else f"#{loc[1]}"
        rest = loc[2:]
    field = ctx.get("field") or ".".join(str(p) for p in rest) or None
    return {"site": site, "field": field, "message": err["msg"]}


def resolve_credentials(
    site: Site, env: Mapping[str, str], secrets_dir: Path | None = None
) -> str | None:
    """The secret a site's credentials reference points to; None for a site that needs none."""
    ref = site.credentials
    if ref is None:
        return None
    what = ref.describe()
    if ref.env is not None:
        value = env.get(ref.env)
        if not value:
            state = "is empty" if value == "" else "is not set"
            raise CredentialsError(
                f"site '{site.name}': credentials {what}: environment variable {ref.env} {state}",
                site=site.name,
                reference=what,
            )
        return value
    return _read_secret_file(site.name, what, Path(ref.file or ""), secrets_dir)


def _read_secret_file(site: str, what: str, path: Path, secrets_dir: Path | None) -> str:
    def fail(reason: str) -> CredentialsError:
        message = f"site '{site}': credentials {what}: {reason}"
        return CredentialsError(message, site=site, reference=what)

    if not path.is_absolute():
        if secrets_dir is None:
            raise fail("a relative secret file needs a secrets dir, and none was given")
        root = secrets_dir.resolve()
        path = (root / path).resolve()
        if not path.is_relative_to(root):
            raise fail(f"the secret file is outside the secrets dir {root}")
    try:
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except FileNotFoundError as exc:
        raise fail(f"no secret file at {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read the secret file {path}: {type(exc).__name__}") from exc
    if not value:
        raise fail(f"the secret file {path} is empty")
    return value


def with_discovered_gpus(site: Site, gpus: Iterable[Gpu], vendor: str = "nvidia") -> Site:
    """A copy of a local site whose capacity lists the GPUs discovered on this machine."""
    counts: dict[str, int] = {}
    for gpu in gpus:
        counts[gpu.model] = counts.get(gpu.model, 0) + 1
    found = tuple(GpuCapacity(model=m, vendor=vendor, count=n) for m, n in sorted(counts.items()))
    known = {g.model.casefold() for g in found}
    kept = tuple(g for g in site.capacity.gpus if g.model.casefold() not in known)
    capacity = site.capacity.model_copy(update={"gpus": kept + found})
    return site.model_copy(update={"capacity": capacity})


def gpu_model_matches(want: str, have: str) -> bool:
    """Whether a requested GPU model names a site's model: equal, or a run of its words.

    `a100` matches `NVIDIA A100-SXM4-80GB`; `a10` does not match `a100`.
    """
    w, h = _words(want), _words(have)
    if not w:
        return False
    return any(h[i : i + len(w)] == w for i in range(len(h) - len(w) + 1))


_WORD: Final = re.compile(r"[a-z0-9]+")


@functools.lru_cache(maxsize=4096)
def _words(text: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(text.casefold()))
