"""Request and response bodies of the REST API (the bus's own models are reused as they are)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas import Phase, TicketState
from schemas.common import Priority

MAX_REASON = 1000
MAX_SQL = 100_000
MAX_SQL_ROWS = 10_000


class _Body(BaseModel):
    # Like the bus's command models: a typo'd field is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid")


class Accepted(BaseModel):
    ticket_id: str
    # accepted: a planner validated it; stored: no planner answered, but the intake stream
    # holds it and a planner will process it when one runs.
    status: Literal["accepted", "stored"]
    message: str = ""


class TicketPage(BaseModel):
    items: list[TicketState]
    total: int
    limit: int
    offset: int


class CancelBody(_Body):
    reason: str = Field(default="cancelled via the HTTP API", max_length=MAX_REASON)


class MoveBody(_Body):
    phase: Phase
    reason: str = Field(default="moved via the HTTP API", max_length=MAX_REASON)


class PriorityBody(_Body):
    priority: Priority
    reason: str = Field(default="set via the HTTP API", max_length=MAX_REASON)


class DeliverBody(_Body):
    reason: str = Field(default="asked via the HTTP API", max_length=MAX_REASON)


class CommandResult(BaseModel):
    ok: bool = True
    ticket_id: str | None = None
    task_id: str | None = None
    message: str = ""


class SqlQuery(_Body):
    sql: str = Field(min_length=1, max_length=MAX_SQL)
    max_rows: int = Field(default=1000, ge=1, le=MAX_SQL_ROWS)


class SqlAnswer(BaseModel):
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool


class Status(BaseModel):
    status: str
