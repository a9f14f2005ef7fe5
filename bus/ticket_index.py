"""Tickets in order, kept current by a watch: what a page of tickets is read from.

Listing tickets by reading every key and then every value grew with history (625 ms for a
page at 5,000 tickets). The index follows `omoi_tickets` with an ordered consumer, keeps
only what lists sort and filter by (created_at, status, phase) for every ticket, newest
first, overall and per status, and answers a page's ids; the page's values are then read
by key, 50 gets however many tickets there are.

Read-your-writes: `caught_up()` waits until the index has seen the bucket's last write
when it was asked (one stream info), so a ticket submitted before a listing is in it.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE
from pydantic import BaseModel, ConfigDict, ValidationError

from bus import constants as c
from bus.delivery import ack_fields
from bus.errors import as_bus_errors
from bus.retry import Patience
from schemas import Phase, TicketStatus

log = logging.getLogger(__name__)

_STREAM = c.kv_stream(c.TICKETS_BUCKET)
_PREFIX = f"$KV.{c.TICKETS_BUCKET}."
# Sorted ascending, (-created_at, id) is newest first (ties, which take the same
# microsecond, by id).
type Order = tuple[float, str]


class _Summary(BaseModel):
    """The few fields of a ticket the index keeps (the rest is skipped when parsing)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    created_at: datetime
    status: TicketStatus
    phase: Phase


@dataclass(frozen=True)
class _Entry:
    order: Order
    status: TicketStatus
    phase: Phase


class TicketIndex:
    def __init__(self, patience: Patience | None = None) -> None:
        self._patience = patience or Patience(None)
        self._entries: dict[str, _Entry] = {}
        self._all: list[Order] = []
        self._by_status: dict[TicketStatus, list[Order]] = {s: [] for s in TicketStatus}
        self._counts: Counter[tuple[TicketStatus, Phase]] = Counter()
        self._seen = 0  # the last stream sequence applied
        self._moved = asyncio.Condition()
        self._sub: Subscription | None = None
        self._js: JetStreamContext | None = None

    def __len__(self) -> int:
        return len(self._entries)

    async def start(
        self, js: JetStreamContext, reads: JetStreamContext | None = None, timeout: float = 120.0
    ) -> None:
        """Load every ticket, then follow changes; returns once loaded. `reads` (else `js`)
        answers the stream info of each `caught_up`: a context with a short timeout, so a
        listing during an outage fails in seconds."""
        self._js = reads or js
        last = await self._last_seq()
        self._sub = await js.subscribe(
            f"{_PREFIX}>",
            stream=_STREAM,
            cb=self._on_msg,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            inactive_threshold=300.0,
            idle_heartbeat=1.0,
        )
        await self._reach(last, timeout)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def caught_up(self, timeout: float = 2.0) -> None:
        """Return once every write made before now is in the index (or after `timeout`,
        with what it has: a slow watch delays a listing, never breaks it). A bus error
        when the server is out of reach."""
        if self._js is None:
            return
        last = await self._last_seq()
        with contextlib.suppress(TimeoutError):
            await self._reach(last, timeout)

    def page(
        self,
        *,
        status: TicketStatus | None = None,
        phase: Phase | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[str], int]:
        """The ids of one page, newest first, and how many match in all."""
        source = self._all if status is None else self._by_status[status]
        if phase is None:
            ids = [order[1] for order in source[offset : offset + limit]]
        else:
            matching = (o[1] for o in source if self._entries[o[1]].phase is phase)
            ids = list(itertools.islice(matching, offset, offset + limit))
        total = sum(
            n
            for (s, p), n in self._counts.items()
            if (status is None or s is status) and (phase is None or p is phase)
        )
        return ids, total

    async def _last_seq(self) -> int:
        """The sequence the index must reach to hold every write so far (0: nothing kept,
        so nothing to wait for). A bus error when the server cannot say, as any read's."""
        js = self._js
        assert js is not None
        with as_bus_errors(f"reading {_STREAM}"):
            info = await self._patience.run(lambda: js.stream_info(_STREAM), f"reading {_STREAM}")
        return info.state.last_seq if info.state.messages else 0

    async def _reach(self, seq: int, timeout: float) -> None:
        async with self._moved:
            await asyncio.wait_for(self._moved.wait_for(lambda: self._seen >= seq), timeout)

    async def _on_msg(self, msg: Msg) -> None:
        key = msg.subject[len(_PREFIX) :]
        seq = ack_fields(msg.reply)[0]
        op = msg.header.get(KV_OP) if msg.header else None
        if op in (KV_DEL, KV_PURGE) or (msg.header and msg.header.get("Nats-Marker-Reason")):
            self._remove(key)
        else:
            try:
                found = _Summary.model_validate_json(msg.data)
            except ValidationError as exc:
                log.warning("ticket %s is not indexed: %s", key, exc)
            else:
                self._put(key, found)
        async with self._moved:
            self._seen = max(self._seen, seq)
            self._moved.notify_all()

    def _put(self, key: str, found: _Summary) -> None:
        order: Order = (-found.created_at.timestamp(), key)
        self._remove(key)
        entry = _Entry(order, found.status, found.phase)
        self._entries[key] = entry
        bisect.insort(self._all, order)
        bisect.insort(self._by_status[entry.status], order)
        self._counts[(entry.status, entry.phase)] += 1

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        for listed in (self._all, self._by_status[entry.status]):
            at = bisect.bisect_left(listed, entry.order)
            if at < len(listed) and listed[at] == entry.order:
                del listed[at]
        self._counts[(entry.status, entry.phase)] -= 1
