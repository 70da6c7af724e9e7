"""The OpenWhisk-compatible REST API under `/api/v1/namespaces/{ns}` over the native objects."""

from gateway.openwhisk.routes import ROUTERS
from gateway.openwhisk.wire_errors import OpenWhiskErrors

__all__ = ["ROUTERS", "OpenWhiskErrors"]
