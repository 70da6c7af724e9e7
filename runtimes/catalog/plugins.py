"""Model plug-ins: the DEEPaaS-style contract of a servable model, and its entry-point loader.

A model is a Python distribution with an entry point in the ``deepfaas.models`` group; the name
of the entry point is the model's name. Installing the distribution makes the model servable:
`load_model_plugin` finds it, checks it, and wraps it so that arguments are validated and the
plug-in's errors come out as `ModelError`s. A plug-in needs no deepfaas import: it keeps the
contract structurally and reports bad input with a ``ValueError`` (a ``loc`` attribute, a tuple
like pydantic's, names the argument at fault).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from numbers import Real
from typing import Any, Final, Protocol, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from eventbus.errors import DeepfaasError
from runtimes.errors import ArtifactRefusedError, ModelError, ModelInputError, ModelNotFoundError

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP: Final = "deepfaas.models"
MODEL_NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_METHODS: Final = ("get_metadata", "load", "predict", "train", "train_default")
_ARG_SCHEMAS: Final = ("predict_args", "train_args")

ArgsT = TypeVar("ArgsT", bound=BaseModel)


class TrainOutput(Protocol):
    """What a plug-in's `train` returns: any object with these three attributes."""

    @property
    def artifact(self) -> bytes:
        """The trained model, serialised; `ModelPlugin.load` turns it back into a model."""

    @property
    def metrics(self) -> Mapping[str, float]:
        """Holdout metrics; must include the metric named in the plug-in's metadata."""

    @property
    def data(self) -> Mapping[str, Any]:
        """What it was trained on (source, checksum, counts, arguments), for lineage."""


class ModelPlugin(Protocol):
    """What an entry point in the ``deepfaas.models`` group resolves to (object, class or module).

    DEEPaaS's model API (`get_metadata`, `predict`, `train` with typed arguments), made
    version-aware: a trained version is artifact bytes that `load` turns into a model object that
    a worker keeps warm and passes to every `predict`. Bad input raises ``ValueError``.
    Optional methods: ``check_artifact(artifact)`` (see `LoadedModelPlugin.check_artifact`)
    and ``predict_batch(model, [kwargs, ...]) -> [result, ...]`` (a batch in one model call).
    """

    @property
    def predict_args(self) -> type[BaseModel]:
        """Pydantic model of `predict`'s keyword arguments."""

    @property
    def train_args(self) -> type[BaseModel]:
        """Pydantic model of `train`'s keyword arguments."""

    def get_metadata(self) -> Mapping[str, Any]:
        """Fields of `ModelMetadata` (name, description, license, framework, metric, ...)."""

    def load(self, artifact: bytes) -> Any:
        """Turn artifact bytes (from `train` or `train_default`) into a model object.

        Artifacts may come from users (registered from an object): load them only from a safe
        format (skops with a trusted-types check, ONNX, safetensors), never with pickle.
        """

    def predict(self, model: Any, **args: Any) -> Mapping[str, Any]:
        """Predict with a loaded model; ``args`` are `predict_args` fields, already validated."""

    def train(self, **args: Any) -> TrainOutput:
        """Train a new version; ``args`` are `train_args` fields, already validated."""

    def train_default(self) -> TrainOutput:
        """Train the first version from data the plug-in ships with."""


class ModelMetadata(BaseModel):
    """What a model says about itself (DEEPaaS ``get_metadata``); unknown keys are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(pattern=MODEL_NAME_PATTERN, description="the entry point's name")
    version: str = Field(default="", description="version of the plug-in's distribution")
    description: str = ""
    keywords: list[str] = Field(default_factory=list)
    license: str = ""
    author: str = ""
    url: str | None = None
    framework: str = Field(default="", description="e.g. scikit-learn, pytorch")
    input: str = Field(default="", description="what `predict` accepts")
    output: str = Field(default="", description="what `predict` returns")
    metric: str = Field(
        default="accuracy", min_length=1, description="holdout metric (higher is better) to gate on"
    )


@dataclass(frozen=True)
class TrainResult:
    """A trained version as the platform keeps it: artifact, metrics, lineage, who made it."""

    model: str
    plugin_version: str
    artifact: bytes
    metrics: dict[str, float]
    data: dict[str, Any] = field(default_factory=dict)
    metric: str = "accuracy"
    seconds: float = 0.0

    @property
    def score(self) -> float:
        """The value of the gating metric (``metrics[metric]``)."""
        return self.metrics[self.metric]


def discover_models(group: str = ENTRY_POINT_GROUP) -> dict[str, EntryPoint]:
    """Installed model plug-ins by name; badly named or duplicate entries are skipped and logged."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        if not re.fullmatch(MODEL_NAME_PATTERN, ep.name):
            logger.warning("skipping model entry point %r (%s): bad name", ep.name, ep.value)
        elif ep.name in found and found[ep.name].value != ep.value:
            logger.warning(
                "model %r is registered twice (%s, %s); using the first",
                ep.name,
                found[ep.name].value,
                ep.value,
            )
        else:
            found.setdefault(ep.name, ep)
    return found


def plugin_modules(group: str = ENTRY_POINT_GROUP) -> list[str]:
    """The modules of the installed model plug-ins, for a fork server to import once."""
    return sorted({ep.module for ep in discover_models(group).values()})


def load_model_plugin(name: str, *, group: str = ENTRY_POINT_GROUP) -> LoadedModelPlugin:
    """Import the plug-in registered as ``name`` and check it keeps the contract."""
    known = discover_models(group)
    ep = known.get(name)
    if ep is None:
        names = ", ".join(sorted(known)) or "none installed"
        raise ModelNotFoundError(
            f"no model plug-in named {name!r} (known: {names})", model=name, known=sorted(known)
        )
    try:
        obj = ep.load()
        if isinstance(obj, type):  # a class: instantiate it with no arguments
            obj = obj()
    except Exception as exc:
        raise ModelError(
            f"cannot load model plug-in {name!r} from {ep.value}: {exc}",
            model=name,
            entry_point=ep.value,
        ) from exc
    return check_model_plugin(obj, name, version=ep.dist.version if ep.dist else "")


def check_model_plugin(obj: object, name: str, *, version: str = "") -> LoadedModelPlugin:
    """Check that ``obj`` has every member of `ModelPlugin` and valid metadata; wrap it."""
    problems = [f"no callable {m!r}" for m in _METHODS if not callable(getattr(obj, m, None))]
    for attr in _ARG_SCHEMAS:
        schema = getattr(obj, attr, None)
        if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
            problems.append(f"{attr!r} is not a pydantic model class")
    if problems:
        raise ModelError(
            f"model plug-in {name!r} does not keep the contract: {'; '.join(problems)}",
            model=name,
            problems=problems,
        )
    plugin = cast(ModelPlugin, obj)  # checked member by member above
    return LoadedModelPlugin(name, plugin, _metadata(plugin, name, version))


def validate_args(
    schema: type[ArgsT], raw: Mapping[str, Any] | BaseModel, *, model: str, what: str
) -> ArgsT:
    """Validate raw arguments against a plug-in's schema; `ModelInputError` lists what failed."""
    if isinstance(raw, schema):
        return raw
    if isinstance(raw, BaseModel):
        raw = raw.model_dump()
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        details = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
        summary = "; ".join(f"{_loc(e['loc'])}: {e['msg']}" for e in errors)
        raise ModelInputError(
            f"invalid {what} arguments for model {model!r}: {summary}",
            model=model,
            errors=details,
        ) from exc


class LoadedModelPlugin:
    """A checked plug-in: validates arguments and turns its errors into `ModelError`s.

    It keeps the `ModelPlugin` contract itself, so code written against the protocol can use it.
    """

    def __init__(self, name: str, plugin: ModelPlugin, metadata: ModelMetadata) -> None:
        self.name = name
        self.plugin = plugin
        self.metadata = metadata

    def __repr__(self) -> str:
        return f"LoadedModelPlugin({self.name!r}, version={self.version!r})"

    @property
    def version(self) -> str:
        """Version of the plug-in's distribution (as its metadata says)."""
        return self.metadata.version

    @property
    def predict_args(self) -> type[BaseModel]:
        """Pydantic model of `predict`'s arguments."""
        return self.plugin.predict_args

    @property
    def train_args(self) -> type[BaseModel]:
        """Pydantic model of `train`'s arguments."""
        return self.plugin.train_args

    def get_metadata(self) -> dict[str, Any]:
        """The checked metadata as a plain dict."""
        return self.metadata.model_dump()

    def predict_schema(self) -> dict[str, Any]:
        """JSON Schema of `predict`'s arguments (for API documentation)."""
        return self.predict_args.model_json_schema()

    def train_schema(self) -> dict[str, Any]:
        """JSON Schema of `train`'s arguments (for API documentation)."""
        return self.train_args.model_json_schema()

    def validate_predict_args(self, raw: Mapping[str, Any] | BaseModel) -> BaseModel:
        """`predict`'s arguments validated; `ModelInputError` if they are not."""
        return validate_args(self.predict_args, raw, model=self.name, what="predict")

    def validate_train_args(self, raw: Mapping[str, Any] | BaseModel) -> BaseModel:
        """`train`'s arguments validated; `ModelInputError` if they are not."""
        return validate_args(self.train_args, raw, model=self.name, what="train")

    def load(self, artifact: bytes) -> Any:
        """The model object for an artifact; `ArtifactRefusedError` if the plug-in refuses it."""
        return self._call("load", self.plugin.load, artifact, bad_input=ArtifactRefusedError)

    def check_artifact(self, artifact: bytes) -> None:
        """`ModelInputError` unless the plug-in vouches for an artifact (without loading it).

        The optional plug-in method ``check_artifact(artifact)`` raises ``ValueError`` for an
        artifact it would not load (not its safe format, an untrusted type); a plug-in without
        one cannot vouch for artifacts it did not write, so none are accepted for it.
        """
        check = getattr(self.plugin, "check_artifact", None)
        if not callable(check):
            raise ModelInputError(
                f"model {self.name!r} cannot check artifacts it did not train (its plug-in has "
                "no check_artifact): train versions through the platform instead",
                model=self.name,
                stage="check_artifact",
            )
        self._call("check_artifact", check, artifact)

    def predict(self, model: Any, **args: Any) -> dict[str, Any]:
        """Validate ``args``, predict with a loaded model, check the result is a mapping."""
        valid = self.validate_predict_args(args)
        return self._answer(self._call("predict", self.plugin.predict, model, **_fields(valid)))

    def predict_many(
        self, model: Any, batch: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any] | DeepfaasError]:
        """Each input's result, or the error of that input alone, in order.

        A plug-in with the optional ``predict_batch(model, [kwargs, ...]) -> [result, ...]``
        gets the valid inputs in one call (one vectorised model call for a whole batch); without
        it, or when that call fails, each input runs on its own, so a bad one fails alone.
        """
        out: list[dict[str, Any] | DeepfaasError] = []
        valid: list[tuple[int, BaseModel]] = []
        for index, raw in enumerate(batch):
            try:
                valid.append((index, self.validate_predict_args(raw)))
                out.append(ModelError("not predicted", model=self.name))  # filled in below
            except DeepfaasError as exc:
                out.append(exc)
        together = getattr(self.plugin, "predict_batch", None)
        if callable(together) and len(valid) > 1:
            try:
                results = together(model, [_fields(args) for _, args in valid])
                answers = [self._answer(r) for r in results]
            except Exception:  # one input may spoil the lot: alone, each says which it was
                answers = []
            if len(answers) == len(valid):
                for (index, _), answer in zip(valid, answers, strict=True):
                    out[index] = answer
                return out
        for index, args in valid:
            try:
                out[index] = self._answer(
                    self._call("predict", self.plugin.predict, model, **_fields(args))
                )
            except DeepfaasError as exc:
                out[index] = exc
        return out

    def _answer(self, result: Any) -> dict[str, Any]:
        if not isinstance(result, Mapping):
            raise ModelError(
                f"model {self.name!r} predict returned {type(result).__name__}, not a mapping",
                model=self.name,
            )
        return dict(result)

    def train(self, **args: Any) -> TrainResult:
        """Validate ``args``, train a new version, check its artifact and metrics."""
        valid = self.validate_train_args(args)
        started = time.perf_counter()
        output = self._call("train", self.plugin.train, **_fields(valid))
        return self._result(output, time.perf_counter() - started)

    def train_default(self) -> TrainResult:
        """Train the first version from the plug-in's own data."""
        started = time.perf_counter()
        output = self._call("train_default", self.plugin.train_default)
        return self._result(output, time.perf_counter() - started)

    def _call(
        self,
        stage: str,
        fn: Any,
        *args: Any,
        bad_input: type[ModelError] = ModelInputError,
        **kwargs: Any,
    ) -> Any:
        try:
            return fn(*args, **kwargs)
        except DeepfaasError:
            raise
        except ValueError as exc:  # the contract's way to say "bad input"
            loc = getattr(exc, "loc", None)
            loc = list(loc) if isinstance(loc, tuple | list) else []
            raise bad_input(
                f"model {self.name!r} {stage}: {exc}",
                model=self.name,
                stage=stage,
                errors=[{"loc": loc, "msg": str(exc), "type": "value_error"}],
            ) from exc
        except Exception as exc:
            raise ModelError(
                f"model {self.name!r} failed in {stage}: {type(exc).__name__}: {exc}",
                model=self.name,
                stage=stage,
            ) from exc

    def _result(self, output: Any, seconds: float) -> TrainResult:
        artifact = getattr(output, "artifact", None)
        metrics = getattr(output, "metrics", None)
        data = getattr(output, "data", None)
        problems = []
        if not isinstance(artifact, bytes | bytearray | memoryview) or not len(artifact):
            problems.append("no artifact bytes")
        numbers: dict[str, float] = {}
        if isinstance(metrics, Mapping):
            numbers = {k: float(v) for k, v in metrics.items() if isinstance(k, str) and _number(v)}
        if not isinstance(metrics, Mapping) or len(numbers) != len(metrics):
            problems.append("metrics are not a mapping of names to finite numbers")
        elif self.metadata.metric not in numbers:
            problems.append(f"metrics lack the gating metric {self.metadata.metric!r}")
        if data is not None and not isinstance(data, Mapping):
            problems.append("data is not a mapping")
        if problems:
            raise ModelError(
                f"model {self.name!r} train returned a bad result: {'; '.join(problems)}",
                model=self.name,
                problems=problems,
            )
        result = TrainResult(
            model=self.name,
            plugin_version=self.version,
            artifact=bytes(cast(bytes, artifact)),
            metrics=numbers,
            data=dict(data or {}),
            metric=self.metadata.metric,
            seconds=seconds,
        )
        logger.info(
            "model %s trained in %.2f s: %s=%.4f", self.name, seconds, result.metric, result.score
        )
        return result


def _metadata(plugin: ModelPlugin, name: str, version: str) -> ModelMetadata:
    try:
        raw = plugin.get_metadata()
    except Exception as exc:
        raise ModelError(f"model {name!r} get_metadata failed: {exc}", model=name) from exc
    if not isinstance(raw, Mapping):
        raise ModelError(f"model {name!r} get_metadata did not return a mapping", model=name)
    given = raw.get("name", name)
    if given != name:
        raise ModelError(
            f"model plug-in calls itself {given!r} but is registered as {name!r}", model=name
        )
    try:
        return ModelMetadata.model_validate(
            {**raw, "name": name, "version": version or raw.get("version", "")}
        )
    except ValidationError as exc:
        raise ModelError(
            f"model {name!r} has invalid metadata: {exc.error_count()} error(s)",
            model=name,
            errors=exc.errors(include_url=False, include_context=False, include_input=False),
        ) from exc


def _fields(args: BaseModel) -> dict[str, Any]:
    """Validated field values as keyword arguments (nested models stay models)."""
    return {name: getattr(args, name) for name in type(args).model_fields}


def _number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _loc(loc: Sequence[Any]) -> str:
    return ".".join(str(part) for part in loc) or "(root)"
