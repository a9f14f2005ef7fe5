"""Read-only views over the KV buckets and the dead letters, shared by the API and the dashboard."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from functools import partial
from typing import Literal

from pydantic import BaseModel

from bus import Bus
from bus import constants as c
from bus.streams import StreamEntry
from bus.ticket_index import TicketIndex
from schemas import Heartbeat, Phase, TaskState, TicketState, TicketStatus, task_key, utcnow

log = logging.getLogger(__name__)

# KV gets run concurrently, but not thousands at once.
_CONCURRENT_GETS = 32

Health = Literal["ok", "stale"]


class AgentView(BaseModel):
    """A heartbeat as the API shows it: how old it is, and whether that is too old."""

    agent_id: str
    role: str
    phases: list[str]
    capabilities: list[str]
    current_task: str | None
    status: str
    host: str
    pid: int
    interval_s: float
    started_at: datetime
    at: datetime
    age_s: float
    health: Health


async def _gather_bounded[T](calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    limit = asyncio.Semaphore(_CONCURRENT_GETS)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with limit:
            return await call()

    return list(await asyncio.gather(*(one(call) for call in calls)))


async def tickets(
    bus: Bus,
    index: TicketIndex,
    *,
    status: TicketStatus | None = None,
    phase: Phase | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[TicketState], int]:
    """One page of the tickets matching the filters, newest first, and how many match:
    the page's ids from the index, then their values by key (the cost of a page, not of
    the history)."""
    await index.caught_up()
    ids, total = index.page(status=status, phase=phase, limit=limit, offset=offset)
    found = await _gather_bounded([partial(bus.tickets.value, i) for i in ids])
    return [t for t in found if t is not None], total


async def ticket_tasks(bus: Bus, ticket: TicketState) -> list[TaskState]:
    """The ticket's tasks in the order it lists them."""
    found = await _gather_bounded(
        [partial(bus.tasks.value, task_key(ticket.id, n)) for n in ticket.tasks]
    )
    return [t for t in found if t is not None]


def agent_view(beat: Heartbeat, now: datetime, stale_beats: int) -> AgentView:
    return AgentView(
        **beat.model_dump(),
        age_s=round(max(beat.age_s(now), 0.0), 3),
        health="stale" if beat.is_stale(now, stale_beats) else "ok",
    )


async def agents(bus: Bus, stale_beats: int) -> list[AgentView]:
    now = utcnow()
    beats = await bus.heartbeats.values()
    views = [agent_view(b, now, stale_beats) for b in beats]
    return sorted(views, key=lambda a: (a.role, a.agent_id))


class DeadLetter(BaseModel):
    seq: int
    origin: str
    reason: str
    category: str
    origin_subject: str
    at: datetime | None
    preview: str


def dead_letter(entry: StreamEntry, preview_chars: int = 200) -> DeadLetter:
    text = entry.data.decode("utf-8", errors="replace")
    return DeadLetter(
        seq=entry.seq,
        origin=entry.subject.rsplit(".", 1)[-1],
        reason=entry.headers.get(c.HDR_REASON, ""),
        category=entry.headers.get(c.HDR_ERROR_CATEGORY, ""),
        origin_subject=entry.headers.get(c.HDR_ORIGIN_SUBJECT, ""),
        at=entry.at,
        preview=text[:preview_chars] + ("…" if len(text) > preview_chars else ""),
    )
