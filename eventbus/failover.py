"""Publishing through a bus outage: wait out a failover, then refuse truthfully.

A JetStream publish carries its message id (`Nats-Msg-Id`), so trying it again is safe: the
stream stores it once. While the connection is down nothing is buffered (see
`Bus.connect(buffer_while_disconnected=False)`), so a refused message is never sent later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
import nats.js.errors

from eventbus.connection import Bus
from eventbus.errors import BusUnavailableError

T = TypeVar("T")

#: seconds a refused caller is told to wait (the ``Retry-After`` of a 503)
RETRY_AFTER_S = 2
#: seconds a publish waits for a lost connection to come back (a cluster moving a client)
FAILOVER_S = 1.0
#: seconds one try waits for JetStream's answer (then the same message is sent again)
ATTEMPT_S = 2.0
#: JetStream's error code for a stream at its byte or message limit with DiscardNew
STREAM_FULL = 10077

#: errors after which the message was surely not stored (nothing was sent, or no stream
#: leader took it)
NOT_STORED: tuple[type[Exception], ...] = (
    nats.errors.OutboundBufferLimitError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,
)


class BusRefusedError(BusUnavailableError):
    """The bus did not take a message; ``fields['maybe_stored']`` is true when it might have."""


def is_full(exc: BaseException) -> bool:
    """The stream refused the message because it is at its budget."""
    return isinstance(exc, nats.js.errors.APIError) and exc.err_code == STREAM_FULL


async def publish_or_refuse(
    bus: Bus,
    publish: Callable[[float], Awaitable[T]],
    *,
    what: str,
    budget: float = 5.0,
    grace: float = FAILOVER_S,
    if_unsure: dict[str, str] | None = None,
) -> T:
    """Run ``publish(timeout)`` until it is stored or ``budget`` seconds pass; raise
    `BusRefusedError` (503 with ``Retry-After``) when the bus will not take it, carrying
    ``if_unsure`` (say, the activation id) when an unanswered try may have been stored."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    maybe_stored = False
    reason = "the bus is not connected"
    while True:
        if not await bus.wait_connected(grace):
            break
        try:
            return await publish(max(0.5, min(ATTEMPT_S, deadline - loop.time())))
        except nats.js.errors.APIError as exc:
            if is_full(exc):
                raise BusRefusedError(
                    f"{what}: the stream is full (at its disk budget); try again later",
                    retry_after=RETRY_AFTER_S,
                    reason="full",
                    maybe_stored=maybe_stored,
                    **((if_unsure or {}) if maybe_stored else {}),
                ) from exc
            if not isinstance(exc, nats.js.errors.ServiceUnavailableError):
                raise
            reason = f"JetStream is unavailable ({exc.description or exc})"
        except nats.errors.TimeoutError:
            maybe_stored = True  # sent, unanswered: the stream may hold it
            reason = "JetStream did not confirm in time"
        except NOT_STORED as exc:
            reason = f"the bus did not take it ({type(exc).__name__})"
        if loop.time() >= deadline:
            break
        await asyncio.sleep(0.1)
    raise BusRefusedError(
        f"{what}: {reason}; try again later",
        retry_after=RETRY_AFTER_S,
        reason="unavailable",
        maybe_stored=maybe_stored,
        **((if_unsure or {}) if maybe_stored else {}),
    )
