"""Keeping a running activation's claim: renewed while the run goes, the run cancelled when
another worker took the activation over."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.msg import Msg

from runtimes.activations import ActivationStore, Claimed, ClaimResult, LostClaimError
from runtimes.worker.executor import Outcome

log = logging.getLogger(__name__)


async def keep_lease(
    store: ActivationStore,
    source: Claimed | asyncio.Task[ClaimResult],
    holder: list[ClaimResult],
    queued: Msg | None,
    run: asyncio.Task[Outcome],
    *,
    lease: float,
    every: float,
    due: bool = False,
) -> None:
    """Renew the claim every ``every`` seconds while the run goes (at once when ``due``:
    started that late), keeping the latest in ``holder[0]``; cancel the run when another
    worker took it over (`LostClaimError`)."""
    claim = await source if isinstance(source, asyncio.Task) else source
    holder.append(claim)
    if not isinstance(claim, Claimed):
        run.cancel()  # a duplicate of an activation that is done or held elsewhere
        raise LostClaimError(claim)
    while True:
        if not due:
            await asyncio.sleep(every)
        due = False
        if queued is not None:
            with contextlib.suppress(Exception):
                await queued.in_progress()
        current = holder[0]
        assert isinstance(current, Claimed)
        # A renewal cancelled mid-write would leave the claim's revision stale and the final
        # write would then fail as if another worker had taken over: finish it first.
        renewing = asyncio.ensure_future(store.renew(current, lease=lease))
        try:
            holder[0] = await asyncio.shield(renewing)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                holder[0] = await renewing
            raise
        except LostClaimError:
            log.warning("activation %s was taken over; cancelling this run", current.record.id)
            run.cancel()
            raise
