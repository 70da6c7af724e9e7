"""Activation records in the `activations` KV bucket, and the claim that makes runs happen once.

A worker *claims* an activation before it runs it: it creates the record (status ``running``
with a lease) or takes over one whose lease expired (its worker died). The final record is
written with a compare-and-set on the claim's revision, so only one run can complete it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from eventbus.connection import Bus
from eventbus.errors import ConflictError as DeepfaasConflictError
from eventbus.errors import NotFoundError as DeepfaasNotFoundError
from eventbus.kv import entry, write
from eventbus.streams import ACTIVATIONS_KV
from eventbus.types import new_id
from runtimes.types import ActivationRecord, ActivationStatus


@dataclass(frozen=True)
class Claimed:
    """This worker owns the activation; write updates at ``revision``."""

    record: ActivationRecord
    revision: int


@dataclass(frozen=True)
class AlreadyDone:
    """Another run completed the activation."""

    record: ActivationRecord


@dataclass(frozen=True)
class Busy:
    """Another worker holds a live lease; try again after ``retry_after`` seconds."""

    retry_after: float


ClaimResult = Claimed | AlreadyDone | Busy


class LostClaimError(Exception):
    """Another worker took the activation over; this run's result is dropped."""


class ActivationStore:
    """Reads and writes activation records."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._kv: KeyValue | None = None

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self.bus.kv(ACTIVATIONS_KV)
        return self._kv

    async def get(self, activation_id: str) -> ActivationRecord:
        """One record, or `NotFoundError`."""
        kv = await self._bucket()
        try:
            entry = await kv.get(activation_id)
        except (KeyNotFoundError, NotFoundError) as exc:
            raise DeepfaasNotFoundError(
                f"activation {activation_id!r} does not exist", activation=activation_id
            ) from exc
        if not entry.value:
            raise DeepfaasNotFoundError(
                f"activation {activation_id!r} does not exist", activation=activation_id
            )
        return ActivationRecord.model_validate_json(entry.value)

    async def claim(self, record: ActivationRecord, *, lease: float) -> ClaimResult:
        """Claim ``record.id`` for this run (see the module docstring)."""
        kv = await self._bucket()
        pipeline = self.bus.pipeline
        for _ in range(5):
            revision = await pipeline.kv_write(kv, record.id, _encode(record, lease), last=None)
            if revision is not None:
                return Claimed(record, revision)
            found = await entry(kv, record.id)
            if found is None:
                continue
            current = ActivationRecord.model_validate_json(found.value or b"{}")
            if current.status.terminal:
                return AlreadyDone(current)
            lease_left = _lease_until(found.value or b"") - time.time()
            if current.status is ActivationStatus.RUNNING and lease_left > 0:
                return Busy(lease_left)
            taken = record.model_copy(
                update={"attempts": current.attempts + 1, "cold_start": record.cold_start}
            )
            revision = await pipeline.kv_write(
                kv, record.id, _encode(taken, lease), last=found.revision
            )
            if revision is not None:
                return Claimed(taken, revision)
        return Busy(0.5)

    async def renew(self, claim: Claimed, *, lease: float) -> Claimed:
        """Extend the lease; `LostClaimError` if another worker took over."""
        kv = await self._bucket()
        value = _encode(claim.record, lease)
        revision = await self.bus.pipeline.kv_write(kv, claim.record.id, value, last=claim.revision)
        if revision is None:
            raise LostClaimError(claim.record.id)
        return Claimed(claim.record, revision)

    async def finish(
        self, claim: Claimed, record: ActivationRecord, *, lease: float = 0
    ) -> Claimed:
        """Write the record (final, or ``retrying``) over the claim; `LostClaimError` on a race."""
        kv = await self._bucket()
        value = _encode(record, lease)
        revision = await self.bus.pipeline.kv_write(kv, record.id, value, last=claim.revision)
        if revision is None:
            raise LostClaimError(record.id)
        return Claimed(record, revision)

    async def cancel(
        self, activation_id: str, *, reason: str, detail: dict[str, Any]
    ) -> ActivationRecord:
        """End a running activation as `error` with ``reason``; the record that stands.

        The write takes the claim's place (compare-and-set), so the worker running it loses
        its claim at its next renewal and stops the run, and a redelivery finds it ended. An
        activation that has ended already is returned unchanged.
        """
        kv = await self._bucket()
        for _ in range(5):
            found = await entry(kv, activation_id)
            if found is None:
                raise DeepfaasNotFoundError(
                    f"activation {activation_id!r} does not exist", activation=activation_id
                )
            current = ActivationRecord.model_validate_json(found.value or b"{}")
            if current.status.terminal:
                return current
            end = now()
            ended = current.model_copy(
                update={
                    "status": ActivationStatus.ERROR,
                    "end": end,
                    "duration_ms": round((end - current.start).total_seconds() * 1000, 3),
                    "error": reason,
                    "error_detail": detail,
                }
            )
            if await write(kv, activation_id, _encode(ended, 0), last=found.revision) is not None:
                return ended
        raise DeepfaasConflictError(
            f"activation {activation_id!r} kept changing; try again", activation=activation_id
        )

    async def put(self, record: ActivationRecord) -> None:
        """Write a record unconditionally (for records no worker claims, e.g. refused input)."""
        kv = await self._bucket()
        await kv.put(record.id, _encode(record, 0))

    async def recent(
        self,
        *,
        limit: int = 30,
        function: str | None = None,
        scan: int = 2000,
        where: Callable[[ActivationRecord], bool] | None = None,
    ) -> list[ActivationRecord]:
        """The newest records first (those ``where`` accepts), from the bucket stream's tail."""
        found, _ = await self.page(limit=limit, function=function, scan=scan, where=where)
        return found

    async def page(
        self,
        *,
        limit: int = 30,
        function: str | None = None,
        scan: int = 2000,
        where: Callable[[ActivationRecord], bool] | None = None,
        before: int | None = None,
    ) -> tuple[list[ActivationRecord], int | None]:
        """Like `recent`, from the stream sequence ``before`` down; and the cursor to go on.

        The cursor is the sequence to pass as ``before`` for the next page, or None when the
        scan reached the start of the bucket (a record updated meanwhile moves to the top, as
        the bucket keeps one revision per key).
        """
        await self._bucket()  # the bucket (and its stream) exist from here on
        info = await self.bus.js.stream_info(f"KV_{ACTIVATIONS_KV}")
        first, last = int(info.state.first_seq), int(info.state.last_seq)
        top = last if before is None else min(last, before - 1)
        seen: set[str] = set()
        found: list[ActivationRecord] = []
        seq = top
        while seq >= max(first, top - scan) and seq > 0 and len(found) < limit:
            try:
                msg = await self.bus.js.get_msg(f"KV_{ACTIVATIONS_KV}", seq, direct=True)
            except NotFoundError:
                seq -= 1
                continue
            seq -= 1
            key = (msg.subject or "").removeprefix(f"$KV.{ACTIVATIONS_KV}.")
            if key in seen or not msg.data:
                continue
            seen.add(key)
            record = ActivationRecord.model_validate_json(msg.data)
            if (function is None or record.function == function) and (
                where is None or where(record)
            ):
                found.append(record)
        return found, (seq + 1 if seq >= max(first, 1) else None)


def new_activation_id() -> str:
    """A fresh, time-ordered activation id."""
    return new_id()


def now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


def _encode(record: ActivationRecord, lease: float) -> bytes:
    # The lease travels beside the record so that readers of the record model never see it.
    body = record.model_dump_json().encode()
    return body[:-1] + f',"lease_until":{time.time() + lease if lease else 0}}}'.encode()


def _lease_until(value: bytes) -> float:
    import orjson

    try:
        return float(orjson.loads(value).get("lease_until") or 0)
    except (ValueError, TypeError):
        return 0.0
