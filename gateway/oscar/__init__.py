"""OSCAR's service API (`/system`, `/run`, `/job`) on the platform's script functions."""

from gateway.oscar.routes import router

__all__ = ["router"]
