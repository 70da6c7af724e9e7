"""Imports run one way: cli, gateway and functions -> runtimes -> eventbus.

Read from the source with `ast` (static imports at any depth, function bodies included), so a
new edge against the direction fails here before it blurs the layering. Function code is
imported only by the worker's loader, by name, never statically by the platform.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: which top-level packages each package may import (besides itself and third parties)
ALLOWED: dict[str, set[str]] = {
    "eventbus": set(),
    "runtimes": {"eventbus"},
    "functions": {"runtimes", "eventbus"},
    "gateway": {"runtimes", "eventbus"},
    "cli": {"gateway", "runtimes", "eventbus"},
}
OURS = {*ALLOWED, "bench", "tests"}


def imports_of(package: str) -> set[tuple[str, str]]:
    """``(file, module)`` for each import of another of our packages in ``package``."""
    found: set[tuple[str, str]] = set()
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in OURS and top != package:
                    found.add((str(path.relative_to(ROOT)), name))
    return found


@pytest.mark.parametrize("package", sorted(p for p in ALLOWED if (ROOT / p).is_dir()))
def test_imports_run_one_way(package: str) -> None:
    wrong = sorted(
        f"{file} imports {module}"
        for file, module in imports_of(package)
        if module.split(".")[0] not in ALLOWED[package]
    )
    assert not wrong, "\n".join(wrong)


def test_the_rule_reads_real_imports() -> None:
    # the reader itself: the worker's entry point imports the bus, so it must be seen
    assert ("runtimes/worker/main.py", "eventbus.connection") in imports_of("runtimes")
