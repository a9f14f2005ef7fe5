"""Searching agents' log lines: the store's `logs` view for what was, OMOI_LOGS for what comes.

History is one query over the published store, so it works while the system runs (and
after it stopped); following reads the stream from just after the newest line the store
had, so no line is missed or shown twice between the two.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from bus import Bus, streams
from bus import constants as c
from store.errors import StoreError
from store.records import LogLine

LEVELS = ("debug", "info", "warning", "error", "critical")
_COLUMNS = (
    "stream_seq",
    "at",
    "level",
    "role",
    "agent",
    "ticket_id",
    "task",
    "subject",
    "trace_id",
    "logger",
    "message",
    "exc",
)


@dataclass(frozen=True)
class LogFilter:
    """Which lines: all of the given conditions hold. `level` is the least severity;
    `grep` a case-insensitive substring of the message or the traceback."""

    ticket: str | None = None
    task: str | None = None
    level: str | None = None
    grep: str | None = None
    agent: str | None = None
    role: str | None = None

    def __post_init__(self) -> None:
        if self.level is not None and self.level not in LEVELS:
            raise ValueError(f"level {self.level!r}: one of {', '.join(LEVELS)}")

    @property
    def levels(self) -> tuple[str, ...]:
        return LEVELS[LEVELS.index(self.level) :] if self.level else LEVELS

    def query(self, limit: int) -> tuple[str, list[Any]]:
        """The store query for the newest `limit` matching lines, oldest first, and its
        parameters (never spliced into the text)."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("ticket_id", self.ticket),
            ("task", self.task),
            ("agent", self.agent),
            ("role", self.role),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if self.level is not None:
            where.append(f"level IN ({', '.join('?' for _ in self.levels)})")
            params += self.levels
        if self.grep:
            where.append("(contains(lower(message), ?) OR contains(lower(coalesce(exc, '')), ?))")
            params += [self.grep.lower()] * 2
        sql = f"SELECT {', '.join(f'"{name}"' for name in _COLUMNS)} FROM logs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY stream_seq DESC LIMIT {int(limit)}"
        return f"SELECT * FROM ({sql}) ORDER BY stream_seq", params

    def subject(self) -> str:
        """The narrowest stream subject that holds every matching line."""
        if self.role is None:
            return c.LOGS_SUBJECTS
        return c.log_subject(self.role, self.agent or "*")

    def matches(self, line: LogLine) -> bool:
        if self.grep:
            needle = self.grep.lower()
            if needle not in line.message.lower() and needle not in (line.exc or "").lower():
                return False
        return (
            (self.ticket is None or line.ticket_id == self.ticket)
            and (self.task is None or line.task == self.task)
            and (self.agent is None or line.agent == self.agent)
            and (self.role is None or line.role == self.role)
            and line.level in self.levels
        )


def rows_as_lines(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(columns, row, strict=True)) for row in rows]


def line_dict(line: LogLine) -> dict[str, Any]:
    """A line from the stream in the shape the store's rows have."""
    return {name: getattr(line, name) for name in _COLUMNS}


async def follow(bus: Bus, flt: LogFilter, after: int | None) -> AsyncIterator[dict[str, Any]]:
    """Matching lines as they are stored in OMOI_LOGS, after stream sequence `after` (or
    from now on when None), until the connection ends."""
    start = streams.Start.after(after) if after else streams.Start(streams.From.NEW)
    async with streams.Feed(bus, flt.subject(), start, stream=c.LOGS_STREAM) as feed:
        async for entry in feed:
            try:
                line = LogLine.from_message(entry.subject, entry.data, entry.seq)
            except StoreError:
                continue  # the recorder dead-letters it; a reader just moves on
            if flt.matches(line):
                yield line_dict(line)
