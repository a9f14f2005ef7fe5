"""Events: every state change, published on `omoi.events.<ticket_id>.<type>`."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from schemas.common import WireModel, utcnow

# Agent-level events have no ticket; they use this token in the ticket position.
AGENTS_TOKEN = "_agents"


class EventType(StrEnum):
    TICKET_CREATED = "ticket.created"
    TICKET_REJECTED = "ticket.rejected"
    TICKET_PHASE_CHANGED = "ticket.phase_changed"
    TICKET_DONE = "ticket.done"
    TICKET_FAILED = "ticket.failed"
    TICKET_CANCELLED = "ticket.cancelled"
    TASK_QUEUED = "task.queued"
    # Queued or running, but its message was gone from the stream: queued again.
    TASK_REQUEUED = "task.requeued"
    # Which worker the planner meant a queued task for, with every candidate's score.
    TASK_ASSIGNED = "task.assigned"
    TASK_STARTED = "task.started"
    TASK_RETRYING = "task.retrying"
    TASK_SUCCEEDED = "task.succeeded"
    TASK_FAILED = "task.failed"
    TASK_CANCELLED = "task.cancelled"
    TASK_SKIPPED = "task.skipped"
    TASK_PROGRESS = "task.progress"
    # A running agent gave its task to another capability or agent.
    TASK_HANDED_OFF = "task.handed_off"
    # One agent's message to another's inbox or to a ticket's channel (a question too).
    MESSAGE_SENT = "message.sent"
    # The commits a task starts from do not merge: both sides and the conflicting hunks.
    MERGE_CONFLICTED = "merge.conflicted"
    GATE_REQUESTED = "gate.requested"
    GATE_PASSED = "gate.passed"
    GATE_FAILED = "gate.failed"
    TICKET_BLOCKED = "ticket.blocked"
    # A finished ticket's branch: asked to be pushed (data: schemas.delivery.DeliveryRequest
    # fields), pushed with its pull request, or not (data: schemas.delivery.DeliveryReport).
    DELIVERY_REQUESTED = "delivery.requested"
    DELIVERY_SUCCEEDED = "delivery.succeeded"
    DELIVERY_FAILED = "delivery.failed"
    # An operator or the guardian paused a ticket (nothing new starts), or resumed it.
    TICKET_PAUSED = "ticket.paused"
    TICKET_RESUMED = "ticket.resumed"
    TICKET_PRIORITY_CHANGED = "ticket.priority_changed"
    # More work an agent noticed (data: schemas.discovery.DiscoveryReport), and the
    # planner's judgement of it (data: schemas.discovery.DiscoveryState).
    DISCOVERY_REPORTED = "discovery.reported"
    DISCOVERY_ACCEPTED = "discovery.accepted"
    DISCOVERY_REJECTED = "discovery.rejected"
    DISCOVERY_HELD = "discovery.held"
    # A succeeded coding task's lesson (data: schemas.memory.MemoryRecord), and one an
    # operator had forgotten.
    MEMORY_RECORDED = "memory.recorded"
    MEMORY_FORGOTTEN = "memory.forgotten"
    # A coding agent's GitHub, Jira or Supabase tool call, as the delivery agent made it
    # (data: tool, op, ok, category, error, clipped arguments).
    INTEGRATION_CALLED = "integration.called"
    AGENT_STARTED = "agent.started"
    AGENT_STOPPED = "agent.stopped"
    AGENT_STALE = "agent.stale"
    AGENT_RECOVERED = "agent.recovered"
    # The watchdog: a supervisor restarted a child (crash or request), a wedged agent
    # was sent to be restarted, a child restarts over and over (for the guardian).
    AGENT_RESTARTED = "agent.restarted"
    AGENT_RESTART_REQUESTED = "agent.restart_requested"
    AGENT_CRASH_LOOPING = "agent.crash_looping"
    # The monitor's findings (data: schemas.anomaly.Anomaly), and their end.
    ANOMALY_DETECTED = "anomaly.detected"
    # The autoscaler changed how many workers a pool runs (agents/autoscaler).
    AUTOSCALER_SCALED = "autoscaler.scaled"
    ANOMALY_RESOLVED = "anomaly.resolved"
    # Alert rules that fired or stopped (data: schemas.alert.AlertNotice), and each
    # attempt to tell a webhook or a mailbox (data: schemas.alert.Delivery).
    ALERT_FIRING = "alert.firing"
    ALERT_RESOLVED = "alert.resolved"
    ALERT_DELIVERY = "alert.delivery"
    # The guardian's interventions (data: schemas.guardian.Intervention), by status.
    GUARDIAN_PROPOSED = "guardian.proposed"
    GUARDIAN_APPLIED = "guardian.applied"
    GUARDIAN_UNDONE = "guardian.undone"
    GUARDIAN_FAILED = "guardian.failed"


class Event(WireModel):
    """An immutable record of something that happened.

    `id` is deterministic for the state change it records, and doubles as the
    `Nats-Msg-Id`, so a handler that runs twice publishes the event once.
    """

    id: str
    type: EventType
    ticket_id: str
    task: str | None = None
    agent: str | None = None
    at: datetime = Field(default_factory=utcnow)
    data: dict[str, Any] = Field(default_factory=dict)
