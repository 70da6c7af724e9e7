"""Every subject the platform uses on the bus, named once.

Stored (JetStream): ``events.<type less prefix>`` and ``activation.<completed|failed>`` (the
EVENTS stream: the platform's activation events on a root of their own, which a consumer reads
only if it asks for them), ``invoke.<function>``
(INVOCATIONS, a work queue per function), ``dlq.<kind>.<namespace>.<name>`` (DLQ: the
target's namespace a token of its own, so one namespace's letters are read alone). Not stored:
``run.<function>`` (sync requests, queue group ``workers``), ``control.<kind>.<function>``
(workers and the control plane), ``control.stem``, ``control.runtimes`` and
``control.dispatcher.stats`` (requests), and the reply inboxes under ``_INBOX``.
A wildcard argument (``*``, ``>``) gives the pattern to subscribe to or to permit.
"""

from __future__ import annotations

import re
from typing import Final, Literal

from eventbus.namespaces import split

EVENTS_ROOT: Final = "events"
#: the platform's activation events (``<prefix>.activation.*``), stored in EVENTS beside
#: ``events.>``: most are completions no trigger wants, and a consumer of ``events.>`` (the
#: dispatcher's) does not read them
ACTIVATION_ROOT: Final = "activation"
INVOKE_ROOT: Final = "invoke"
RUN_ROOT: Final = "run"
DLQ_ROOT: Final = "dlq"
CONTROL_ROOT: Final = "control"
#: reply inboxes (each role's connections use ``_INBOX.<role>``: `eventbus.permissions`)
INBOX_ROOT: Final = "_INBOX"
#: first tokens that belong to the platform (a subscription's NATS sink may use none of them)
PLATFORM_ROOTS: Final = frozenset(
    {EVENTS_ROOT, ACTIVATION_ROOT, INVOKE_ROOT, RUN_ROOT, DLQ_ROOT, CONTROL_ROOT, INBOX_ROOT}
)

ALL_EVENTS: Final = f"{EVENTS_ROOT}.>"
ALL_ACTIVATION_EVENTS: Final = f"{ACTIVATION_ROOT}.>"
#: every subject the EVENTS stream holds: a reader of all events filters on both
EVENT_SUBJECTS: Final = (ALL_EVENTS, ALL_ACTIVATION_EVENTS)
ALL_INVOCATIONS: Final = f"{INVOKE_ROOT}.>"
ALL_RUNS: Final = f"{RUN_ROOT}.>"
ALL_DEAD_LETTERS: Final = f"{DLQ_ROOT}.>"
#: dead letters stored before their subjects named the namespace: ``dlq.<kind>.<target>``
LEGACY_DEAD_LETTERS: Final = f"{DLQ_ROOT}.*.*"
ALL_CONTROL: Final = f"{CONTROL_ROOT}.>"
#: a prewarmed worker (a stem) says it is warm
CONTROL_STEM: Final = f"{CONTROL_ROOT}.stem"
#: counts of finished activations, from each process that publishes completions, to the gateways
CONTROL_METRICS: Final = f"{CONTROL_ROOT}.metrics"
#: request: each function's runtime state (read-only)
CONTROL_RUNTIMES: Final = f"{CONTROL_ROOT}.runtimes"
#: request: a dispatcher's counters
DISPATCHER_STATS: Final = f"{CONTROL_ROOT}.dispatcher.stats"

#: ``control.<kind>.<function>``: ready, heartbeat and stopped come from workers; wake and
#: instances go to the control plane; ``control.deployments.<op>`` are requests of `deploy`
ControlKind = Literal["ready", "heartbeat", "stopped", "wake", "instances", "deployments"]


def events_subject(suffix: str) -> str:
    """The ``events.…`` subject of an event type given less its prefix (``storage.*``)."""
    return f"{EVENTS_ROOT}.{suffix}"


def event_subject(event_type: str, prefix: str) -> str:
    """The subject of an event type: ``events.`` and the type less its prefix, dots kept; the
    platform's activation events (``<prefix>.activation.…``) on ``activation.…``."""
    platform = event_type.startswith(prefix + ".")
    rest = event_type[len(prefix) + 1 :] if platform else event_type
    subject = _subject_token(rest, keep_dots=True)
    return (
        subject if platform and rest.startswith(f"{ACTIVATION_ROOT}.") else events_subject(subject)
    )


def activation_subject(outcome: str = "*") -> str:
    """Where the platform's ``activation.<outcome>`` events are stored (``*``: all of them)."""
    return f"{ACTIVATION_ROOT}.{outcome}"


def legacy_activation_subject(outcome: str = "*") -> str:
    """Where they were stored before they had a root of their own (``events.activation.…``):
    still stored and dispatched, for processes of the previous version during an upgrade."""
    return events_subject(f"{ACTIVATION_ROOT}.{outcome}")


def invoke_subject(function: str) -> str:
    """The work-queue subject of a function's asynchronous invocations."""
    return f"{INVOKE_ROOT}.{function}"


def run_subject(function: str) -> str:
    """The request-reply subject (queue group) of a function's synchronous invocations."""
    return f"{RUN_ROOT}.{function}"


def dlq_subject(kind: str, target: str) -> str:
    """Where a dead letter of ``kind`` (invocation, dispatch, delivery, …) for ``target`` (an
    internal name) goes: ``dlq.<kind>.<namespace>.<name>``. Letters stored before were on
    ``dlq.<kind>.<target>`` (`LEGACY_DEAD_LETTERS`)."""
    namespace, name = split(target)
    return f"{DLQ_ROOT}.{kind}.{namespace}.{name}"


def control_subject(kind: ControlKind, name: str = "*") -> str:
    """``control.<kind>.<name>`` (a function, or a deployment operation); the default ``*``
    matches every one."""
    return f"{CONTROL_ROOT}.{kind}.{name}"


def function_of(subject: str) -> str:
    """The function a per-function subject (``run.f``, ``control.wake.f``) names: its last token."""
    return subject.rsplit(".", 1)[-1]


def _subject_token(text: str, *, keep_dots: bool = False) -> str:
    allowed = re.sub(r"[^A-Za-z0-9_\-.]" if keep_dots else r"[^A-Za-z0-9_\-]", "_", text)
    return allowed.strip(".") or "_"
