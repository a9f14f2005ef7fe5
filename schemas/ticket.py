"""Ticket submissions (intake JSON) and ticket state (the `omoi_tickets` bucket)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from schemas.common import Identifier, Phase, StrictWireModel, WireModel, utcnow
from schemas.task import TaskSpec

Priority = Literal["low", "normal", "high", "critical"]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class TicketStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self is not TicketStatus.RUNNING


class TicketSubmission(StrictWireModel):
    """What a client publishes on `omoi.tickets.submit`."""

    title: Title
    description: str = Field(default="", max_length=50_000)
    id: Identifier | None = None
    priority: Priority = "normal"
    workflow: Identifier | None = None
    tasks: list[TaskSpec] | None = Field(default=None, max_length=500)


class PhaseTransition(WireModel):
    from_: Phase | None = Field(alias="from")
    to: Phase
    at: datetime = Field(default_factory=utcnow)
    reason: str


class TicketState(WireModel):
    """The current state of one ticket, kept in `omoi_tickets` under its id."""

    id: str
    title: str
    description: str = ""
    priority: Priority = "normal"
    workflow: str | None = None
    phase: Phase = Phase.REQUIREMENTS
    status: TicketStatus = TicketStatus.RUNNING
    phase_history: list[PhaseTransition] = Field(default_factory=list)
    tasks: list[str] = Field(default_factory=list)
    # Where to return to when a blocked ticket is unblocked.
    blocked_from: Phase | None = None
    reason: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
