"""Artifacts crafted to run code when they are loaded: what a hostile user would register."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

MAGIC = b"deepfaas-digits-artifact\n"  # the digits plug-in's, copied: the attacker knows it


class RunsCode:
    """Unpickling this runs ``exec`` of a line that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"import pathlib; pathlib.Path({str(self.marker)!r}).touch()",))


def code_pickle(marker: Path) -> bytes:
    """A bare pickle whose loading creates ``marker``."""
    return pickle.dumps(RunsCode(marker))


def digits_format_1(marker: Path) -> bytes:
    """A well-formed digits artifact of format 1 (pickle, with a valid checksum) that runs code."""
    payload = code_pickle(marker)
    header = {
        "format": 1,
        "classes": list(range(10)),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "plugin": "digits",
    }
    return MAGIC + json.dumps(header).encode() + b"\n" + payload
