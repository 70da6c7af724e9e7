"""Calling another function through the platform: a sync invocation, as the gateway makes one.

`runtimes.invoker.SyncInvoker` sends it: with no warm worker ("no responders") it is queued
with a reply inbox and the controller is woken, so a function scaled to zero still answers; a
call that outruns its wait is queued as well (the safety net), so it still runs once.
"""

from __future__ import annotations

from typing import Any, Final

from eventbus.connection import Bus
from eventbus.errors import DeepfaasError
from runtimes.invoker import SyncInvoker
from runtimes.specs import FunctionRegistry
from runtimes.types import ActivationStatus

SOURCE: Final = "/functions/deploy"


class CallError(DeepfaasError):
    """A function called through the platform failed or did not answer in time."""

    code = "provider"


async def call_function(
    bus: Bus, function: str, body: bytes, *, cause: str | None, timeout: float
) -> Any:
    """Invoke ``function`` synchronously; its result, or `CallError` if it did not succeed."""
    spec = await FunctionRegistry(bus).get(function)  # NotFoundError: not registered
    done = await SyncInvoker(bus, source=SOURCE).invoke_sync(
        spec, body, content_type="application/json", wait=timeout, cause=cause
    )
    record = done.record
    if record is None:
        raise CallError(f"{function} did not answer within {timeout:g} s",
                        function=function, activation_id=done.activation_id)  # fmt: skip
    if record.status is not ActivationStatus.SUCCESS:
        raise CallError(
            f"{function} activation {done.activation_id} ended {record.status.value}: "
            f"{record.error}", function=function, activation_id=done.activation_id,
        )  # fmt: skip
    return record.result
