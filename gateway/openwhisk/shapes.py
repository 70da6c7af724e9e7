"""Our objects in OpenWhisk's shapes: actions, activation records, rules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from eventbus.namespaces import local_name
from eventbus.triggers import Trigger
from gateway.openwhisk.types import DEFAULT_KIND
from runtimes.types import ActivationRecord, ActivationStatus, FunctionSpec

#: our status -> OpenWhisk's (status, statusCode)
STATUS: dict[ActivationStatus, tuple[str, int]] = {
    ActivationStatus.SUCCESS: ("success", 0),
    ActivationStatus.ERROR: ("application error", 1),
    ActivationStatus.INVALID: ("application error", 1),
    ActivationStatus.TIMEOUT: ("action developer error", 2),
}


def ms(moment: datetime | None) -> int:
    """Milliseconds since the epoch (0 when unknown)."""
    return int(moment.timestamp() * 1000) if moment is not None else 0


def semver(version: int) -> str:
    """Our integer version as OpenWhisk's `0.0.N`."""
    return f"0.0.{version}"


def limits(spec: FunctionSpec | None) -> dict[str, int]:
    """OpenWhisk's `limits` of an action."""
    if spec is None:
        return {"timeout": 60000, "memory": 256, "logs": 10, "concurrency": 1}
    return {
        "timeout": int(spec.timeout_s * 1000),
        "memory": spec.memory_mb,
        "logs": 10,
        "concurrency": spec.concurrency,
    }


def action(
    name: str, namespace: str, spec: FunctionSpec | None, meta: dict[str, Any] | None
) -> dict[str, Any]:
    """An action document (``spec`` None: a sequence, all of it in ``meta``)."""
    meta = meta or {}
    kind = meta.get("kind", DEFAULT_KIND)
    exec_: dict[str, Any] = {"kind": kind, "binary": False}
    if spec is None:
        exec_["components"] = list(meta.get("components", []))
        version, updated = int(meta.get("version", 1)), int(meta.get("updated", 0))
    else:
        if spec.code is not None:
            exec_["code"] = spec.code
        if spec.handler != "main":
            exec_["main"] = spec.handler
        version, updated = spec.version, ms(spec.updated)
    return {
        "namespace": namespace,
        "name": name,
        "version": semver(version),
        "exec": exec_,
        "parameters": meta.get("parameters", []),
        "annotations": [*meta.get("annotations", []), {"key": "exec", "value": kind}],
        "limits": limits(spec),
        "publish": bool(meta.get("publish", False)),
        "updated": updated,
    }


def response_of(record: ActivationRecord) -> dict[str, Any]:
    """The `response` of an activation: status, statusCode, success, result."""
    status, code = STATUS.get(record.status, ("whisk internal error", 3))
    if record.status is ActivationStatus.SUCCESS:
        result = record.result if isinstance(record.result, dict) else {"result": record.result}
    else:
        result = {"error": record.error or status}
    return {"status": status, "statusCode": code, "success": code == 0, "result": result}


def activation(
    record: ActivationRecord, spec: FunctionSpec | None, *, with_logs: bool = True
) -> dict[str, Any]:
    """An activation record as OpenWhisk shows it."""
    name = str(record.annotations.get("openwhisk_name") or local_name(record.function))
    path = str(record.annotations.get("openwhisk_path") or f"{record.namespace}/{name}")
    response = response_of(record)
    kind = record.mode if record.mode in ("trigger", "sequence") else DEFAULT_KIND
    annotations: list[dict[str, Any]] = [
        {"key": "path", "value": path},
        {"key": "waitTime", "value": int(record.wait_ms or 0)},
        {"key": "kind", "value": kind},
        {"key": "limits", "value": limits(spec)},
    ]
    if record.cold_start or record.init_ms:
        annotations.insert(2, {"key": "initTime", "value": int(record.init_ms or 0)})
    if kind == "sequence" and not record.cause:
        annotations.append({"key": "topmost", "value": True})
    if record.cause:
        annotations.append({"key": "causedBy", "value": record.cause})
    cause = {"cause": record.cause} if record.cause and kind != "trigger" else {}
    return {
        "activationId": record.id,
        "namespace": record.namespace,
        "name": name,
        "subject": record.namespace,
        "version": semver(record.version),
        "start": ms(record.start),
        "end": ms(record.end),
        "duration": int(record.duration_ms or 0),
        "statusCode": response["statusCode"],
        "response": response,
        "logs": record.logs if with_logs else [],
        "annotations": annotations,
        "publish": False,
        **cause,
    }


def package(doc: dict[str, Any], actions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A package document; with ``actions`` (a GET) its actions and feeds too."""
    shown = {**doc, "binding": doc.get("binding") or {}}
    if actions is not None:
        shown |= {"actions": actions, "feeds": []}
    return shown


def rule(trigger: Trigger, namespace: str, trigger_name: str) -> dict[str, Any]:
    """A rule document of the native trigger that implements it."""
    return {
        "namespace": namespace,
        "name": local_name(trigger.name),
        "version": semver(trigger.version),
        "status": "active" if trigger.enabled else "inactive",
        "trigger": {"name": trigger_name, "path": namespace},
        "action": {"name": local_name(trigger.function), "path": namespace},
        "publish": False,
        "annotations": [],
        "updated": ms(trigger.updated),
    }
