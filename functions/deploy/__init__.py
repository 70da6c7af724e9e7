"""The `deploy` function: place runtimes on the best site of the hybrid cloud, and manage them."""

from functions.deploy.handler import handle
from functions.deploy.models import DeployInput, DeployOutput

__all__ = ["DeployInput", "DeployOutput", "handle"]
