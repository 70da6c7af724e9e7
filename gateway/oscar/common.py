"""What every OSCAR route shares: plain-text errors, the caller's namespace, its services."""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
from fastapi import Request, Response
from fastapi.responses import PlainTextResponse

from eventbus.errors import (
    BucketTakenError,
    ConflictError,
    DeepfaasError,
    NotFoundError,
    ValidationFailedError,
)
from eventbus.namespaces import qualify
from eventbus.storage.settings import StorageSettings
from gateway.auth.errors import ForbiddenError
from gateway.oscar import fdl
from gateway.oscar.store import ServiceStore
from gateway.state import state_of

VERSION: Final = "deepfaas-0.1.0"
TEXT: Final = {"text/plain": {"schema": {"type": "string"}}}
SERVICE_BODY: Final = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "an OSCAR FDL service",
                    "required": ["name", "image", "script"],
                    "properties": {
                        "name": {"type": "string", "pattern": fdl.SERVICE_NAME_PATTERN},
                        "image": {"type": "string", "minLength": 1},
                        "script": {"type": "string", "minLength": 1},
                    },
                }
            }
        },
    }
}
RAW_BODY: Final = {
    "requestBody": {
        "required": False,
        "content": {"application/octet-stream": {"schema": {"type": "string"}}},
    }
}


class OscarError(DeepfaasError):
    """An answer OSCAR gives as a status and plain text."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message or "error")
        self.status = status
        self.text = message


def text_answer(status: int, message: str = "") -> Response:
    """A plain-text answer, as OSCAR's handlers write them."""
    return PlainTextResponse(message, status_code=status)


def plain_errors(
    handler: Callable[..., Awaitable[Response]],
) -> Callable[..., Awaitable[Response]]:
    """Answer our errors as OSCAR does: a status and plain text (an empty 404)."""

    @functools.wraps(handler)
    async def wrapped(*args: Any, **kwargs: Any) -> Response:
        try:
            return await handler(*args, **kwargs)
        except OscarError as exc:
            return text_answer(exc.status, exc.text)
        except NotFoundError:
            return text_answer(404)
        except (BucketTakenError, ForbiddenError) as exc:
            return text_answer(403, exc.message)
        except ConflictError as exc:
            return text_answer(409, exc.message)
        except ValidationFailedError as exc:
            return text_answer(400, exc.message)

    return wrapped


async def body_json(request: Request) -> Any:
    """The request body as JSON; 400 as OSCAR says it when it is not."""
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise OscarError(400, f"The service specification is not valid: {exc}") from exc


def caller_namespace(request: Request) -> str:
    """The namespace of the authenticated caller (401 without one)."""
    principal = getattr(request.state, "principal", None)
    if principal is None:
        raise OscarError(401)
    return str(principal.namespace)


def service_name(service: str) -> str:
    """``service`` if it can name a service; else not found."""
    if not re.match(fdl.SERVICE_NAME_PATTERN, service):
        raise NotFoundError(f"no service {service!r}")
    return service


async def service_doc(request: Request, service: str) -> tuple[str, dict[str, Any]]:
    """The internal name and the record of the caller's service (404 when it has none)."""
    name = qualify(caller_namespace(request), service_name(service))
    doc = await ServiceStore(state_of(request).bus).get(name)
    if doc is None:
        raise NotFoundError(f"no service {service!r}")
    return name, doc


def service_view(doc: dict[str, Any], settings: StorageSettings) -> dict[str, Any]:
    """A service as OSCAR lists it: the FDL, its token, its storage provider (no secrets)."""
    service = dict(doc["service"])
    env = dict(service.get("environment") or {})
    if env.get("secrets"):
        env["secrets"] = {key: "" for key in env["secrets"]}
    service["environment"] = env
    service["token"] = doc["token"]
    service["storage_providers"] = {"minio": {"default": minio_provider(settings)}}
    return service


def minio_provider(settings: StorageSettings) -> dict[str, Any]:
    """OSCAR's `minio_provider`: the S3 endpoint of the platform's store, never credentials
    (they are the platform's, not the namespace's). The local store has no S3 endpoint:
    uploads go through `/v1/buckets`."""
    endpoint = ""
    if settings.storage_backend != "local" and settings.storage_s3_endpoint:
        scheme = "https" if settings.storage_s3_secure else "http"
        endpoint = f"{scheme}://{settings.storage_s3_endpoint}"
    return {
        "endpoint": endpoint,
        "verify": settings.storage_s3_secure,
        "access_key": "",
        "secret_key": "",
        "region": settings.storage_s3_region or "",
    }
