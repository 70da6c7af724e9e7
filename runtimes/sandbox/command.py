"""The bubblewrap command line of a runner: what it sees, and nothing of the platform.

Inside: read-only /usr, the Python install and its packages, the platform's `runtimes`,
`eventbus` and `functions` packages (code, no data), a scratch dir as home and cwd, a private
size-limited /tmp, a minimal /proc and /dev; its own PID, IPC, UTS and cgroup namespaces, and
its own network namespace: empty for ``network: none``, connected outside by slirp4netns for
``egress`` (`runtimes.sandbox.netns`; the host's loopback is not reachable from it). The data
dir, the credentials, other functions' scratch dirs and the host's home are simply not there.
"""

from __future__ import annotations

import glob
import os
import site
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from runtimes.sandbox.types import Network, required_tool

#: packages of the platform a runner imports (the loader, the executor, their types)
RUNNER_PACKAGES = ("runtimes", "eventbus", "functions")


def bwrap_path() -> str:
    """Where bubblewrap's `bwrap` is (SandboxUnavailableError naming the install if missing)."""
    return required_tool(
        "bwrap", "bubblewrap", "or set DEEPFAAS_SANDBOX=off on a trusted single-user machine"
    )


def package_roots() -> list[str]:
    """Folders that hold the platform's packages: the runner's PYTHONPATH (only the packages
    themselves are bound, so nothing else of these folders is visible)."""
    roots: list[str] = []
    for package in RUNNER_PACKAGES:
        module = sys.modules.get(package) or _import(package)
        for location in getattr(module, "__path__", []):
            root = os.path.dirname(os.path.realpath(location))
            if root not in roots:
                roots.append(root)
    return roots


def _import(package: str) -> object:
    try:
        return __import__(package)
    except ImportError:
        return None


def readonly_paths(exclude: Iterable[Path]) -> list[str]:
    """Host directories bound read-only: Python, its packages, the platform's code."""
    excluded = [p.resolve() for p in exclude]
    roots = set(package_roots())
    paths: set[str] = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)}
    for entry in sys.path:
        # A package root (the repository, when run from a checkout) is never bound whole.
        if entry and os.path.isdir(entry) and os.path.realpath(entry) not in roots:
            paths.add(os.path.realpath(entry))
    for package in RUNNER_PACKAGES:
        module = sys.modules.get(package) or _import(package)
        for location in getattr(module, "__path__", []):
            paths.add(os.path.realpath(location))

    def safe(path: str) -> bool:
        # A directory that holds the data dir (a repository root on sys.path, say) is never
        # bound whole: only the packages inside it are.
        resolved = Path(path)
        return not any(resolved == ex or resolved in ex.parents for ex in excluded) and not (
            resolved == Path("/") or str(resolved).startswith(("/proc", "/dev", "/sys"))
        )

    chosen = sorted(p for p in paths if safe(p))
    # /usr is bound whole below; paths inside it need no bind of their own.
    return [p for p in chosen if not p.startswith("/usr/") and p != "/usr"]


def masked_files() -> list[str]:
    """Start-up files of the platform's own editable install, hidden from the runner (bound
    over with /dev/null): the import finder they install maps packages the sandbox does not
    hold or finds on PYTHONPATH first, and installing it cost the runner's start pathlib,
    urllib and ~10% of its start-up CPU."""
    found: list[str] = []
    for directory in site.getsitepackages():
        found += glob.glob(os.path.join(glob.escape(directory), "__editable__.deepfaas-*.pth"))
    return sorted(found)


def gpu_devices(visible: str) -> list[str]:
    """Device nodes of the GPUs in ``visible`` (CUDA_VISIBLE_DEVICES) and the shared ones."""
    if not visible.strip():
        return []
    nodes = [f"/dev/nvidia{i.strip()}" for i in visible.split(",") if i.strip().isdigit()]
    shared = ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset"]
    return [n for n in nodes + shared + glob.glob("/dev/nvidia-caps/*") if os.path.exists(n)]


def build_command(
    *,
    python: str,
    scratch: Path,
    network: Network,
    tmp_mb: int,
    readonly: Sequence[str],
    devices: Sequence[str] = (),
    env: dict[str, str],
    info_fd: int | None = None,
    resolv: Path | None = None,
) -> list[str]:
    """``bwrap … python -m runtimes.sandbox.runner`` for one runner.

    ``info_fd``: bwrap writes the sandbox's pid there (an `egress` runner's network is attached
    to it); ``resolv``: the resolv.conf bound in instead of the host's.
    """
    args = [
        bwrap_path(),
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--hostname",
        "sandbox",
        # The runner drops to its own uid before loading user code; until then it needs these.
        "--cap-add",
        "CAP_SETUID",
        "--cap-add",
        "CAP_SETGID",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    if network == "none" or info_fd is not None:
        args.append("--unshare-net")
    if info_fd is not None:
        args += ["--info-fd", str(info_fd)]
    # Mounts first that later binds may sit inside (a platform installed under /tmp, say).
    args += ["--proc", "/proc", "--dev", "/dev", "--size", str(tmp_mb << 20)]
    args += ["--perms", "1777", "--tmpfs", "/tmp"]
    for name in ("bin", "lib", "lib64", "sbin"):
        target = os.readlink(f"/{name}") if os.path.islink(f"/{name}") else None
        if target is not None:
            args += ["--symlink", target, f"/{name}"]
        elif os.path.isdir(f"/{name}"):
            args += ["--ro-bind", f"/{name}", f"/{name}"]
    # /etc traversable by the runner's uid (bwrap makes a missing parent 0700): without it
    # a function resolved no name and opened no CA bundle
    args += ["--perms", "0755", "--dir", "/etc"]
    for item in ("/etc/ssl", "/etc/ca-certificates", "/etc/resolv.conf", "/etc/hosts",
                 "/etc/nsswitch.conf", "/etc/localtime", "/etc/alternatives"):  # fmt: skip
        if item == "/etc/resolv.conf" and resolv is not None:
            args += ["--ro-bind", str(resolv), item]
        elif os.path.exists(item):
            args += ["--ro-bind", item, item]
    made: set[str] = set()
    for path in readonly:
        # bwrap makes missing parents 0700; a runner that is no longer root must traverse them.
        for parent in reversed(Path(path).parents):
            text = str(parent)
            if text in ("/", "/usr") or text.startswith("/usr/") or text in made:
                continue
            made.add(text)
            args += ["--perms", "0755", "--dir", text]
        args += ["--ro-bind", path, path]
    for path in masked_files():
        args += ["--ro-bind", os.devnull, path]
    for device in devices:
        args += ["--dev-bind", device, device]
    args += ["--bind", str(scratch), "/scratch", "--chdir", "/scratch", "--clearenv"]
    for key, value in {**env, "PYTHONPATH": os.pathsep.join(package_roots())}.items():
        args += ["--setenv", key, value]
    args += [python, "-s", "-m", "runtimes.sandbox.runner"]
    return args
