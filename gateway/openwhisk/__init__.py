"""The OpenWhisk-compatible REST API under `/api/v1/namespaces/{ns}` over the native objects."""

from gateway.openwhisk.routes import ROUTERS

__all__ = ["ROUTERS"]
