"""The guardian's interventions: what it did or proposes, why, and on what evidence.

Each is kept in `omoi_interventions` under its id and told as a `guardian.*` event
(`omoi.events._agents.guardian.<status>`); operators approve proposals and undo what can
be undone over `omoi.guardian.approve|undo` (request/reply).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from schemas.common import Priority, StrictWireModel, WireModel, utcnow


class InterventionKind(StrEnum):
    # The worker takes no new task (its running ones finish); undone by lifting it.
    QUARANTINE_WORKER = "quarantine_worker"
    # A crash-looping agent's supervisor stops restarting it (`<host>.<child>`); undone
    # by releasing it.
    HOLD_AGENT = "hold_agent"
    # The ticket stops moving on: nothing new is dispatched; undone by resuming it.
    PAUSE_TICKET = "pause_ticket"
    # The task is cancelled (a poison task, failing on worker after worker): final.
    CANCEL_TASK = "cancel_task"
    # A steering message into a stuck agent's conversation (`<ticket>.<task>`): said once
    # it is said.
    STEER_AGENT = "steer_agent"
    # The ticket of a starved task goes to `priority` (its queued tasks move to the urgent
    # lane); undone by setting back `previous_priority`.
    RAISE_PRIORITY = "raise_priority"
    # A discovery the planner held becomes a task (target: the discovery's id, which
    # begins with its ticket's): final, like an operator's approval.
    APPROVE_DISCOVERY = "approve_discovery"


REVERSIBLE = frozenset(
    {
        InterventionKind.QUARANTINE_WORKER,
        InterventionKind.HOLD_AGENT,
        InterventionKind.PAUSE_TICKET,
        InterventionKind.RAISE_PRIORITY,
    }
)


class InterventionStatus(StrEnum):
    # Beyond the guardian's own authority: waits for an operator's approval.
    PROPOSED = "proposed"
    APPLIED = "applied"
    UNDONE = "undone"
    # Applying it failed or found nothing to do (the ticket had finished): see `outcome`.
    FAILED = "failed"


class Intervention(WireModel):
    """One intervention. Its id derives from what it acts on and the finding that caused
    it, so a redelivered finding never intervenes twice."""

    id: str
    kind: InterventionKind
    # A worker's agent id, `<host>.<child>` (a supervisor's child), a ticket id, or
    # `<ticket>.<task>`.
    target: str
    status: InterventionStatus
    reason: str
    # The finding it answers: an event id (anomaly.detected, agent.crash_looping) or
    # the attempts behind a poison task.
    trigger: str
    evidence: list[str] = Field(default_factory=list)
    reversible: bool
    # Within the guardian's own authority: applied without asking (and applied again if
    # the guardian stopped between recording and applying it).
    autonomous: bool = False
    # Who decided each step: the guardian's agent id, or the operator who approved or
    # undid it (`nats:operator`, `token:<id>`).
    decided_by: str
    approved_by: str | None = None
    undone_by: str | None = None
    outcome: str = ""
    # What a steer_agent intervention tells the agent, and the worker it runs on.
    message: str = ""
    worker: str | None = None
    # What a raise_priority intervention sets, and what it found (for undoing it).
    priority: Priority | None = None
    previous_priority: Priority | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Quarantine(WireModel):
    """A worker the guardian took work away from, in `omoi_quarantine` under its id."""

    agent_id: str
    intervention: str
    reason: str
    at: datetime = Field(default_factory=utcnow)


class InterventionRequest(StrictWireModel):
    """An operator approving a proposal or undoing an intervention."""

    id: str
    by: str = "operator"
    reason: str = ""


class InterventionReply(WireModel):
    ok: bool
    intervention: Intervention | None = None
    error: str | None = None
