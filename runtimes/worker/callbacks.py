"""Posting an activation's record to the callback URL its caller gave."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.msg import Msg

from eventbus.backoff import Backoff
from eventbus.egress import EgressPolicy, EgressRefusedError
from runtimes.types import ActivationRecord

log = logging.getLogger(__name__)
#: between tries of a callback (a few tries: the cap is never reached)
RETRY = Backoff(0.5, 60.0)
#: a callback's tries together, at most
DEADLINE_S = 60.0


async def post_callback(
    url: str, record: ActivationRecord, *, egress: EgressPolicy, tries: int = 3
) -> bool:
    """POST the record as JSON, retrying with backoff on errors and 5xx; True when delivered.
    Each try goes to an address ``egress`` allows, as resolved for it (none: not sent)."""
    import httpx  # here, not at import: most workers never post a callback (httpx loads its CLI)

    body = record.model_dump_json().encode()
    headers = {
        "content-type": "application/json",
        "x-activation-id": record.id,
        "x-activation-status": record.status.value,
    }
    async with httpx.AsyncClient(timeout=10) as client:
        for attempt in range(1, tries + 1):
            try:
                target = await egress.pin(url)
                response = await client.post(
                    target.url,
                    content=body,
                    headers={**headers, **target.headers},
                    extensions=target.extensions,
                )
                if response.status_code < 500:
                    if response.is_error:
                        log.warning(
                            "callback %s for %s refused: %s", url, record.id, response.status_code
                        )
                    return response.is_success
            except EgressRefusedError as exc:
                log.warning("callback for activation %s not sent: %s", record.id, exc)
                return False
            except (httpx.HTTPError, OSError) as exc:  # OSError: its host did not resolve now
                log.debug("callback %s for %s failed: %s", url, record.id, exc)
            await asyncio.sleep(RETRY.delay(attempt))
    log.warning("callback %s for activation %s not delivered after %d tries", url, record.id, tries)
    return False


class Callbacks:
    """The callbacks one worker is posting. Each queued invocation is acked after its callback
    was tried (its lease renewed meanwhile): a worker that dies first leaves the invocation to
    its redelivery, whose worker finds the record final and posts again (at least once)."""

    def __init__(self, egress: EgressPolicy, *, tries: int, renew_every: float) -> None:
        self.egress = egress
        self.tries = tries
        self.renew_every = renew_every
        #: apart from the worker's intake tasks: a slow receiver must not hold back its intake
        self.tasks: set[asyncio.Task[None]] = set()

    def post(self, url: str, record: ActivationRecord, queued: Msg | None) -> None:
        """POST ``record`` to ``url`` in a task of its own, then ack ``queued`` (if any)."""
        task = asyncio.create_task(self._post(url, record, queued))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _post(self, url: str, record: ActivationRecord, queued: Msg | None) -> None:
        keeper = None if queued is None else asyncio.create_task(self._keep(queued))
        try:
            # a receiver that answers a byte at a time holds the invocation this long at most
            async with asyncio.timeout(DEADLINE_S):
                await post_callback(url, record, egress=self.egress, tries=self.tries)
        except TimeoutError:
            log.warning("callback %s for activation %s past %g s: given up", url, record.id,
                        DEADLINE_S)  # fmt: skip
        except Exception:  # whatever it was, the invocation is not left unacked for ever
            log.exception("callback %s for activation %s failed", url, record.id)
        finally:
            if keeper is not None:
                keeper.cancel()
        if queued is not None:
            with contextlib.suppress(Exception):  # unacked: redelivered, posted again
                await queued.ack()

    async def _keep(self, queued: Msg) -> None:
        while True:
            await asyncio.sleep(self.renew_every)
            with contextlib.suppress(Exception):
                await queued.in_progress()
