"""The platform's subjects, named once in eventbus.subjects."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from eventbus.subjects import (
    PLATFORM_ROOTS,
    control_subject,
    dlq_subject,
    event_subject,
    events_subject,
    function_of,
    invoke_subject,
    run_subject,
)
from eventbus.subscriptions import nats_sink_subject


def test_each_family_has_one_shape() -> None:
    assert event_subject("io.deepfaas.storage.object.created", "io.deepfaas") == (
        "events.storage.object.created"
    )
    assert event_subject("com.example.a b", "io.deepfaas") == "events.com.example.a_b"
    assert events_subject("trigger.*") == "events.trigger.*"
    # the platform's activation events have a root of their own; a type without the prefix not
    assert event_subject("io.deepfaas.activation.completed", "io.deepfaas") == (
        "activation.completed"
    )
    assert event_subject("activation.completed", "io.deepfaas") == "events.activation.completed"
    assert event_subject("io.deepfaas.activation", "io.deepfaas") == "events.activation"
    assert invoke_subject("f") == "invoke.f" and run_subject("f") == "run.f"
    assert dlq_subject("delivery", "s1") == "dlq.delivery.default.s1"
    assert dlq_subject("invoke", "team-b=fn") == "dlq.invoke.team-b.fn"
    assert control_subject("wake", "f") == "control.wake.f"
    assert control_subject("ready") == "control.ready.*"
    assert function_of(control_subject("instances", "team--f")) == "team--f"


def test_a_nats_sink_may_use_no_platform_root() -> None:
    for root in PLATFORM_ROOTS:
        with pytest.raises(ValueError, match="reserved"):
            nats_sink_subject(f"nats:{root}.x")
    assert nats_sink_subject("nats:mine.x") == "mine.x"


def test_no_subject_is_spelled_outside_eventbus_subjects() -> None:
    roots = ("events.", "invoke.", "run.", "dlq.", "control.", "_INBOX")
    repo = Path(__file__).resolve().parents[2]
    spelled = []
    for package in ("eventbus", "runtimes", "gateway", "functions", "cli"):
        for path in sorted((repo / package).rglob("*.py")):
            if path == repo / "eventbus" / "subjects.py" or path.name.endswith("_pb2.py"):
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                # a string literal, or the literal start of an f-string (prose has spaces)
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    text = node.value
                    if text.startswith(roots) and " " not in text:
                        spelled.append(f"{path.relative_to(repo)}:{node.lineno}: {text!r}")
    assert spelled == [], "use eventbus.subjects:\n" + "\n".join(spelled)
