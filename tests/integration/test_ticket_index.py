"""The ticket index on a real nats-server: pages newest first, filters and totals, kept
current by its watch (a status change moves a ticket, a deletion drops it, a bad value is
skipped), and a listing made after a write includes it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bus import Bus
from schemas import Phase, TicketState, TicketStatus, utcnow

pytestmark = pytest.mark.integration

T0 = utcnow()


def ticket(n: int, status: TicketStatus, phase: Phase) -> TicketState:
    return TicketState(id=f"t{n:03}", title=f"ticket {n}", status=status, phase=phase,
                       created_at=T0 + timedelta(seconds=n))  # fmt: skip


async def test_pages_filters_and_totals_follow_the_bucket(bus: Bus) -> None:
    statuses = (TicketStatus.RUNNING, TicketStatus.DONE, TicketStatus.FAILED)
    phases = (Phase.DESIGN, Phase.TESTING)
    for n in range(30):
        await bus.tickets.put(f"t{n:03}", ticket(n, statuses[n % 3], phases[n % 2]))
    await bus.tickets.kv.put("broken", b"not a ticket")
    index = await bus.index_tickets()
    try:
        assert len(index) == 30  # the broken value is skipped, and nothing crashed
        ids, total = index.page(limit=5)
        assert (ids, total) == (["t029", "t028", "t027", "t026", "t025"], 30)
        assert index.page(limit=3, offset=28) == (["t001", "t000"], 30)
        running, total = index.page(status=TicketStatus.RUNNING, limit=3)
        assert (running, total) == (["t027", "t024", "t021"], 10)
        testing, total = index.page(phase=Phase.TESTING, limit=2, offset=1)
        assert (testing, total) == (["t027", "t025"], 15)
        both, total = index.page(status=TicketStatus.DONE, phase=Phase.DESIGN, limit=50)
        assert both == ["t028", "t022", "t016", "t010", "t004"] and total == 5

        # A write made before a listing is in it: a new ticket, a status change, a delete.
        await bus.tickets.put("t100", ticket(100, TicketStatus.RUNNING, Phase.DESIGN))
        await bus.tickets.update("t027", _finish)
        await bus.tickets.delete("t029")
        await index.caught_up()
        ids, total = index.page(limit=3)
        assert (ids, total) == (["t100", "t028", "t027"], 30)
        running, total = index.page(status=TicketStatus.RUNNING, limit=2)
        assert (running, total) == (["t100", "t024"], 10)
        assert index.page(status=TicketStatus.DONE, limit=1) == (["t028"], 11)
    finally:
        await index.stop()


def _finish(t: TicketState) -> TicketState:
    t.status = TicketStatus.DONE
    return t


async def test_an_empty_bucket_indexes_at_once(bus: Bus) -> None:
    index = await bus.index_tickets()
    try:
        await index.caught_up(timeout=1)
        assert index.page() == ([], 0)
    finally:
        await index.stop()
