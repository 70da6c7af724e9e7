"""Running user code apart from the platform: a bubblewrap sandbox per runtime instance."""

from runtimes.sandbox.host import SandboxedExecutor
from runtimes.sandbox.policy import is_trusted
from runtimes.sandbox.types import SandboxLimits, SandboxUnavailableError

__all__ = ["SandboxLimits", "SandboxUnavailableError", "SandboxedExecutor", "is_trusted"]
