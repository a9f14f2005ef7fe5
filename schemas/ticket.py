"""Ticket submissions (intake JSON) and ticket state (the `omoi_tickets` bucket)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from schemas.common import Identifier, Phase, Priority, StrictWireModel, WireModel, utcnow
from schemas.delivery import DeliveryState, TicketSource
from schemas.discovery import DiscoveryState
from schemas.gate import GateSpec, GateVerdict
from schemas.task import TaskSpec
from schemas.usage import Budget

# What a task that finally fails does to the rest of its ticket: `fail_fast` starts
# nothing new (queued and blocked tasks are skipped); `continue` lets independent tasks
# finish and skips only the failed task's dependents. Either way the ticket then fails.
OnFailure = Literal["fail_fast", "continue"]
# What a git conflict in a merge becomes: a resolution task (an agent task whose prompt
# carries both sides), or the merging task's clear failure.
OnConflict = Literal["resolve", "fail"]
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
    # A git URL or path to clone into the ticket's workspace. The ticket's result is
    # pushed back to it as the branch `omoi/<id>` (and a pull request opened on GitHub),
    # unless `deliver` is false; nothing else of it is ever written.
    repository: str | None = Field(default=None, max_length=2000)
    deliver: bool | None = None
    # The issue this ticket came from (GitHub, Jira), for links and replies.
    source: TicketSource | None = None
    budget: Budget | None = None
    # Phase gates; when absent, the workflow's gates apply (explicit tasks have none).
    gates: dict[Phase, GateSpec] | None = None
    max_gate_attempts: int | None = Field(default=None, ge=1, le=20)
    on_failure: OnFailure = "fail_fast"
    on_conflict: OnConflict = "resolve"

    @model_validator(mode="after")
    def _delivers_somewhere(self) -> TicketSubmission:
        if self.deliver and self.repository is None:
            raise ValueError("deliver needs a repository to push the ticket's branch to")
        return self

    @property
    def delivers(self) -> bool:
        """Whether the finished work is pushed: by default, when there is a repository."""
        return self.repository is not None if self.deliver is None else self.deliver


class GateStatus(StrEnum):
    NONE = "none"  # not asked for yet (or asked again after a fix)
    PENDING = "pending"  # a request is out, waiting for the validator's verdict
    PASSED = "passed"
    FAILED = "failed"  # failed with no attempts left: the ticket is blocked
    OVERRIDDEN = "overridden"  # an operator moved the ticket past it


class GateState(WireModel):
    """Where one phase's gate stands, with the latest verdicts as evidence."""

    # Verdicts asked for, and how many of them failed: only failures use up
    # `max_gate_attempts` (a gate passed, then re-checked after a later gate's fix,
    # has lost nothing).
    attempts: int = 0
    failures: int = 0
    status: GateStatus = GateStatus.NONE
    commit: str | None = None
    verdicts: list[GateVerdict] = Field(default_factory=list)
    # How often this attempt's request was sent again after it went missing; each resend
    # has its own message id, so the stream's duplicate window cannot swallow it.
    resent: int = 0


class PhaseContext(WireModel):
    """What a finished phase hands to the phases after it."""

    phase: Phase
    summary: str
    artifacts: list[str] = Field(default_factory=list)
    feedback: list[str] = Field(default_factory=list)
    summarised_by: Literal["model", "extract"] = "extract"
    at: datetime = Field(default_factory=utcnow)


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
    repository: str | None = None
    # Whether the finished work is pushed to `repository`, and how that stands.
    deliver: bool = False
    delivery: DeliveryState | None = None
    source: TicketSource | None = None
    # What agents reported finding, and what became of each (agents/planner/discoveries.py).
    discoveries: list[DiscoveryState] = Field(default_factory=list)
    # Whether the workspace is a git repository with a commit per task: tickets with
    # agent tasks, gates or a repository. Plain shell tickets skip git's cost.
    versioned: bool = False
    budget: Budget | None = None
    gate_specs: dict[Phase, GateSpec] = Field(default_factory=dict)
    max_gate_attempts: int = 3
    on_failure: OnFailure = "fail_fast"
    on_conflict: OnConflict = "resolve"
    gates: dict[Phase, GateState] = Field(default_factory=dict)
    context: list[PhaseContext] = Field(default_factory=list)
    # The workspace commit holding the ticket's finished work.
    commit: str | None = None
    # Where to return to when a blocked ticket is unblocked.
    blocked_from: Phase | None = None
    # Paused (by an operator or the guardian): nothing moves on until it is resumed.
    paused: bool = False
    paused_reason: str | None = None
    reason: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
