"""Audit entries sent off the caller's path: published at once, confirmed in the background.

A request must not wait for the audit stream's ack, and must not fail because the audit
could not be stored; but a lost entry must never go unnoticed, so every failure is logged
as a warning naming the entry. Floods (a client hammering with a bad token, or past its
rate limit) are folded: the first of identical entries goes out at once, the rest of the
same `fold_s` window go out as one entry whose `count` says how many it stands for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from schemas.audit import AuditEntry, clip, new_entry_id
from schemas.common import utcnow

if TYPE_CHECKING:
    from bus.bus import Bus

log = logging.getLogger(__name__)

# Entries in flight at most; beyond that new ones are dropped (and said so), so a client
# that outruns NATS cannot make the gateway hold unbounded memory.
MAX_PENDING = 2000
FOLD_S = 1.0

FoldKey = tuple[str, str, str, str, str, int | None]


@dataclass
class _Fold:
    first: AuditEntry
    timer: asyncio.TimerHandle
    more: int = 0


class AuditTrail:
    def __init__(self, bus: Bus, *, max_pending: int = MAX_PENDING, fold_s: float = FOLD_S):
        self.bus = bus
        self.max_pending = max_pending
        self.fold_s = fold_s
        self.dropped = 0
        self._pending: set[asyncio.Task[None]] = set()
        self._folds: dict[FoldKey, _Fold] = {}

    def record(self, entry: AuditEntry, *, fold: bool = False) -> None:
        """Send `entry`; returns at once. With `fold`, identical entries are folded."""
        if fold:
            key = _fold_key(entry)
            held = self._folds.get(key)
            if held is not None:
                held.more += 1
                return
            timer = asyncio.get_running_loop().call_later(self.fold_s, self._unfold, key)
            self._folds[key] = _Fold(entry, timer)
        self._send(entry)

    def _unfold(self, key: FoldKey) -> None:
        held = self._folds.pop(key, None)
        if held is None or not held.more:
            return
        suffix = f" ({held.more} more like this within {self.fold_s:g} s)"
        update = {"id": new_entry_id(), "at": utcnow(), "count": held.more}
        self._send(
            held.first.model_copy(update={**update, "detail": clip(held.first.detail + suffix)})
        )

    def _send(self, entry: AuditEntry) -> None:
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            log.warning(
                "audit backlog full (%d in flight): dropped %s %s by %s (%d dropped so far)",
                len(self._pending), entry.action, entry.target, entry.actor, self.dropped,
            )  # fmt: skip
            return
        task = asyncio.create_task(self._publish(entry))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish(self, entry: AuditEntry) -> None:
        try:
            await self.bus.confirm(await self.bus.publish_audit_async(entry))
        except Exception as exc:  # noqa: BLE001 - an audit failure must not fail the caller
            log.warning(
                "audit entry not stored: %s %s by %s from %s (%s): %r",
                entry.action, entry.target, entry.actor, entry.source, entry.outcome, exc,
            )  # fmt: skip

    async def flush(self, timeout: float = 5.0) -> None:
        """Send what is folded now and wait (up to `timeout`) for everything in flight."""
        for key, held in list(self._folds.items()):
            held.timer.cancel()
            self._unfold(key)
        if self._pending:
            _, left = await asyncio.wait(set(self._pending), timeout=timeout)
            if left:
                log.warning("%d audit entries unconfirmed after %.0f s: lost", len(left), timeout)
            for task in left:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def _fold_key(entry: AuditEntry) -> FoldKey:
    return (entry.action, entry.actor, entry.source, entry.target, entry.outcome, entry.status)
