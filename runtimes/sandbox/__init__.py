"""Running user code apart from the platform: a bubblewrap sandbox per runtime instance.

The worker's side lives in `runtimes.sandbox.host` (it imports the bus); this package itself
stays light, since the runner inside the sandbox imports it too.
"""

from runtimes.sandbox.policy import is_trusted
from runtimes.sandbox.types import SandboxLimits, SandboxUnavailableError

__all__ = ["SandboxLimits", "SandboxUnavailableError", "is_trusted"]
