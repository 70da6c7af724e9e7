"""Errors of the platform: one root, one root per package, structured fields."""

from __future__ import annotations

from typing import Any


class DeepfaasError(Exception):
    """Root of every error the platform raises on purpose."""

    #: short machine-readable code; the gateway maps codes to HTTP statuses in one table
    code: str = "internal"

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields

    def __str__(self) -> str:
        return self.message


class NotFoundError(DeepfaasError):
    """The named object does not exist."""

    code = "not_found"


class ConflictError(DeepfaasError):
    """The object exists already or changed under us."""

    code = "conflict"


class ValidationFailedError(DeepfaasError):
    """Input failed validation; ``fields['errors']`` lists the failing locations."""

    code = "invalid"


class EventBusError(DeepfaasError):
    """Root of event bus errors."""

    code = "bus"


class InvalidEventError(EventBusError, ValidationFailedError):
    """A message is not a valid CloudEvent."""

    code = "invalid_event"


class InvalidFormError(EventBusError, ValidationFailedError):
    """A body is not a well-formed ``multipart/form-data`` form."""

    code = "invalid"


class BusUnavailableError(EventBusError):
    """NATS is not reachable or JetStream did not answer in time."""

    code = "unavailable"


class BucketTakenError(ConflictError):
    """The bucket name is owned by another namespace (bucket names are global, as in S3)."""


class BucketAccessError(DeepfaasError):
    """The namespace may not write this bucket: another namespace owns it (403)."""

    code = "forbidden"
