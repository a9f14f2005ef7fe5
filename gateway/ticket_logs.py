"""A ticket's log lines for its page, from the store's `logs` view, grouped by task.

Like the charts, this is a view onto the store: no reader, no `logs` view yet or a reader
that fails all end in an empty section, never in a failed page.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.sql import SqlError, SqlReader

log = logging.getLogger(__name__)

TICKET_LOGS_SQL = (
    'SELECT "at", level, role, agent, task, message FROM logs WHERE ticket_id = ? '
    "ORDER BY stream_seq DESC LIMIT ?"
)


@dataclass(frozen=True)
class LogRow:
    at: datetime | None
    level: str
    who: str
    message: str


@dataclass
class TaskLogs:
    """The lines about one task; `task` None for lines about the whole ticket."""

    task: str | None
    lines: list[LogRow] = field(default_factory=list)

    @property
    def worst(self) -> str:
        levels = {row.level for row in self.lines}
        return next((lv for lv in ("critical", "error", "warning") if lv in levels), "info")


async def ticket_logs(reader: SqlReader | None, ticket_id: str, limit: int) -> list[TaskLogs]:
    """The newest `limit` lines about the ticket, oldest first, grouped by task in the
    order each task first speaks (the ticket's own lines first)."""
    if reader is None:
        return []
    try:
        result = await asyncio.to_thread(
            reader.query, TICKET_LOGS_SQL, [ticket_id, limit], max_rows=limit
        )
    except SqlError as exc:
        log.info("no logs for ticket %s: %s", ticket_id, exc)
        return []
    groups: dict[str | None, TaskLogs] = {None: TaskLogs(None)}
    for at, level, role, agent, task, message in reversed(list(result.rows)):
        group = groups.setdefault(task, TaskLogs(task))
        group.lines.append(LogRow(_when(at), str(level), _who(role, agent), str(message)))
    return [g for g in groups.values() if g.lines]


def _who(role: Any, agent: Any) -> str:
    return "/".join(str(p) for p in (role, agent) if p)


def _when(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None
