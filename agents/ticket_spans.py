"""The spans of a ticket's own course: the ticket, each phase, each task. They are
recorded when a state change closes them, with the times the state holds, and their ids
are derived from the ticket (`bus.trace_context`), so the attempts, gate checks and model
calls other processes record hang under them.
"""

from __future__ import annotations

from datetime import datetime

from agents.spans import record_span
from bus.trace_context import phase_span_id, task_span_id, ticket_span_id
from schemas import Phase, TaskState, TaskStatus, TicketState, TicketStatus

# The phases a ticket can be in that are not work: no span of their own.
_NOT_WORK = (Phase.DONE, Phase.BLOCKED)


def record_task(task: TaskState) -> None:
    """A task that has just ended: from ready (queued) to finished, under its phase."""
    if task.finished_at is None:
        return
    failed = task.status is not TaskStatus.SUCCEEDED
    record_span(
        "task",
        ticket=task.ticket_id,
        task=task.name,
        start=task.queued_at or task.created_at,
        end=task.finished_at,
        span_id=task_span_id(task.ticket_id, task.name),
        parent=phase_span_id(task.ticket_id, task.phase.value),
        attributes={
            "omoi.phase": task.phase.value,
            "omoi.capability": task.capability,
            "omoi.status": task.status.value,
            "omoi.attempts": task.attempts,
        },
        error=_why(task) if failed else None,
    )


def _why(task: TaskState) -> str:
    return task.error.message if task.error else task.reason or task.status.value


def record_ticket_changes(before: TicketState, after: TicketState) -> None:
    """The spans the change from `before` to `after` closed: every phase it left, and the
    ticket (with the phase it ended in) if it ended."""
    history = after.phase_history
    for i in range(len(before.phase_history), len(history)):
        left = history[i].from_
        if left is not None and left not in _NOT_WORK:
            _record_phase(after, left, i, history[i].at, f"to {history[i].to.value}")
    if not (after.status.terminal and not before.status.terminal):
        return
    end = after.finished_at or after.updated_at
    if after.phase not in _NOT_WORK:
        _record_phase(after, after.phase, len(history), end, after.status.value)
    record_span(
        "ticket",
        ticket=after.id,
        start=after.created_at,
        end=end,
        span_id=ticket_span_id(after.id),
        root=True,
        attributes={
            "omoi.title": after.title,
            "omoi.status": after.status.value,
            "omoi.tasks": len(after.tasks),
        },
        error=None if after.status is TicketStatus.DONE else (after.reason or after.status.value),
    )


def _record_phase(ticket: TicketState, phase: Phase, left_at: int, end: datetime, how: str) -> None:
    """The span of `phase`, left at history entry `left_at`: from the last entry into it
    before that. Each return to a phase is a span of its own."""
    entries = [j for j in range(left_at) if ticket.phase_history[j].to is phase]
    start = ticket.phase_history[entries[-1]].at if entries else ticket.created_at
    record_span(
        f"phase {phase.value}",
        ticket=ticket.id,
        start=start,
        end=end,
        span_id=phase_span_id(ticket.id, phase.value, max(len(entries) - 1, 0)),
        attributes={"omoi.phase": phase.value, "omoi.outcome": how},
    )
