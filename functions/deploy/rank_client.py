"""Calling another function through the platform: a sync invocation over NATS, as the gateway does.

With no warm worker ("no responders") the invocation is queued with a reply inbox and the
controller is woken, so a function scaled to zero still answers.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final

import nats.errors
import orjson
from nats.aio.msg import Msg

from eventbus.codec import to_nats
from eventbus.connection import Bus
from eventbus.errors import DeepfaasError
from eventbus.invocations import enqueue, new_invocation
from eventbus.types import CloudEvent, run_subject
from runtimes.activations import new_activation_id
from runtimes.specs import FunctionRegistry

SOURCE: Final = "/functions/deploy"


class CallError(DeepfaasError):
    """A function called through the platform failed or did not answer in time."""

    code = "provider"


async def call_function(
    bus: Bus, function: str, body: bytes, *, cause: str | None, timeout: float
) -> Any:
    """Invoke ``function`` synchronously; its result, or `CallError` if it did not succeed."""
    await FunctionRegistry(bus).get(function)  # NotFoundError: not registered
    invocation = new_invocation(
        bus, function, body, source=SOURCE, activation_id=new_activation_id(),
        mode="sync", cause=cause,
    )  # fmt: skip
    headers, data = to_nats(invocation)
    try:
        reply = await bus.nc.request(run_subject(function), data, timeout=timeout, headers=headers)
        record = _record(reply)
        if record.get("status") == "busy":
            record = await _queue_and_wait(bus, invocation, timeout)
    except nats.errors.NoRespondersError:
        record = await _queue_and_wait(bus, invocation, timeout)
    except nats.errors.TimeoutError:
        record = {}
    if not record:
        raise CallError(f"{function} did not answer within {timeout:g} s",
                        function=function, activation_id=invocation.id)  # fmt: skip
    if record.get("status") != "success":
        raise CallError(
            f"{function} activation {invocation.id} ended {record.get('status')}: "
            f"{record.get('error')}", function=function, activation_id=invocation.id,
        )  # fmt: skip
    return record.get("result")


async def _queue_and_wait(bus: Bus, invocation: CloudEvent, wait: float) -> dict[str, Any]:
    inbox = bus.nc.new_inbox()
    future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()

    async def _got(msg: Msg) -> None:
        if not future.done():
            future.set_result(msg)

    sub = await bus.nc.subscribe(inbox, cb=_got, max_msgs=1)
    try:
        extensions = {**invocation.extensions, "replyto": inbox}
        await enqueue(bus, invocation.model_copy(update={"extensions": extensions}))
        await bus.nc.publish(f"control.wake.{invocation.subject}", b"")
        try:
            return _record(await asyncio.wait_for(future, wait))
        except TimeoutError:
            return {}
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


def _record(msg: Msg) -> dict[str, Any]:
    try:
        value = orjson.loads(msg.data)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
