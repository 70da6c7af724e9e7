"""Memory of a warm no-op function: unique RSS (USS) of its worker and its sandboxed runner.

USS is what the kernel would free if the process went away (its private pages); RSS also
counts pages shared with other processes (the interpreter, libraries), so summing RSS over
many workers overstates what they need. Read from /proc/<pid>/smaps_rollup.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from eventbus.server import EmbeddedNats
from tests.support import start_platform, wait_for

NOOP = "def main(params):\n    return params\n"
MIB = 1024 * 1024
BUDGET_MIB = 4096


def memory(pid: int) -> tuple[float, float]:
    """(USS, RSS) of ``pid`` in MiB."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[name] = int(parts[0]) * 1024
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return uss / MIB, fields.get("Rss", 0) / MIB


def descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (children first)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = Path(task, "children").read_text().split()
        for child in map(int, children):
            found += [child, *descendants(child)]
    return found


def _fork_server_ready(root: Path) -> bool:
    return any("ready" in log.read_text() for log in root.rglob("fork-server.log"))


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def run(_: float) -> list[str]:
    """Print-ready lines: USS and RSS of a warm no-op worker, its runner, and the platform."""
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        nats = EmbeddedNats(store_dir=Path(tmp) / "nats").start()
        plat = start_platform(nats, Path(tmp) / "platform")
        try:
            # the fork server says so in its log once it has imported the runtime; until then
            # (or with DEEPFAAS_FORK_SERVER=false) workers are spawned
            wait_for(lambda: _fork_server_ready(Path(tmp)), 120)
            with plat.client() as client:
                spec = {"handler": "main", "code": NOOP, "min_scale": 1, "max_scale": 1}
                client.put("/v1/functions/noop", json=spec).raise_for_status()
                for _ in range(3):  # warm: the first calls import and allocate what later reuse
                    wait_for(
                        lambda: (
                            client.post("/v1/functions/noop/invoke", json={}).status_code == 200
                        ),
                        60,
                    )
                [instance] = [
                    i for i in client.get("/v1/functions/noop/instances").json() if i["ready"]
                ]
            worker = int(instance["pid"])
            runners = [p for p in descendants(worker) if "runtimes.sandbox.runner" in _cmdline(p)]
            w_uss, w_rss = memory(worker)
            r_uss, r_rss = (0.0, 0.0) if not runners else memory(runners[-1])
            up_uss, up_rss = memory(plat.process.pid)
            # forked workers keep the fork server's command line: the server is up's child
            zygotes = [
                p
                for p in descendants(plat.process.pid)
                if "runtimes.worker.zygote" in _cmdline(p) and _parent(p) == plat.process.pid
            ]
            forked = bool(zygotes) and _parent(worker) == zygotes[0]
            total = w_uss + r_uss
            lines += [
                f"warm no-op worker      USS {w_uss:6.1f} MiB  RSS {w_rss:6.1f} MiB"
                + ("  (forked by the fork server)" if forked else "  (spawned)"),
                f"its sandboxed runner   USS {r_uss:6.1f} MiB  RSS {r_rss:6.1f} MiB"
                + ("" if runners else "  (no runner: sandbox off)"),
                f"warm no-op function (worker + runner) USS {total:.1f} MiB (target <= 30 MiB): "
                f"{int(BUDGET_MIB // total)} fit in 4 GiB",
                f"deepfaas up (gateway, controller, dispatcher, ...) USS {up_uss:.1f} MiB, "
                f"RSS {up_rss:.1f} MiB",
            ]
            for pid in zygotes:
                z_uss, z_rss = memory(pid)
                lines.append(
                    f"fork server (one per machine, its pages shared by forked workers) "
                    f"USS {z_uss:.1f} MiB, RSS {z_rss:.1f} MiB"
                )
        finally:
            plat.stop()
            nats.stop()
    return lines
