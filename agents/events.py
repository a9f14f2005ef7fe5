"""Build the events agents emit, with ids that are deterministic per state change."""

from __future__ import annotations

from typing import Any

from agents.branches import Conflict
from schemas import Event, EventType, TaskState
from schemas.ticket import TicketState


def task_event(task: TaskState, kind: EventType, agent: str | None, **data: Any) -> Event:
    return Event(
        id=f"{task.id}.g{task.generation}.a{task.attempts}.{kind.value}",
        type=kind,
        ticket_id=task.ticket_id,
        task=task.name,
        agent=agent,
        data={
            "phase": task.phase.value,
            "capability": task.capability,
            "attempt": task.attempts,
            "generation": task.generation,
            **data,
        },
    )


def ticket_event(ticket: TicketState, kind: EventType, agent: str | None, **data: Any) -> Event:
    return Event(
        id=f"{ticket.id}.{kind.value}.{len(ticket.phase_history)}",
        type=kind,
        ticket_id=ticket.id,
        agent=agent,
        data={"phase": ticket.phase.value, "status": ticket.status.value, **data},
    )


def conflict_event(task: TaskState, conflict: Conflict, agent: str | None) -> Event:
    """`merge.conflicted`: which commits, the files, and the hunks as git marked them."""
    return task_event(
        task,
        EventType.MERGE_CONFLICTED,
        agent,
        ours=conflict.ours,
        theirs=conflict.theirs,
        files=conflict.files,
        hunks=conflict.hunks,
    )
