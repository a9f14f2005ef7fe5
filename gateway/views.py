"""What the dashboard's templates show, computed from bus state (pure functions, no I/O)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agents.branches import task_branch
from bus.streams import StreamEntry
from schemas import (
    WORK_PHASES,
    EventType,
    Phase,
    TaskState,
    TaskStatus,
    TicketState,
    TicketStatus,
    utcnow,
)

# How each task event changes the status a card shows, before the state is re-read.
TASK_EVENT_STATUS = {
    EventType.TASK_QUEUED: TaskStatus.QUEUED,
    EventType.TASK_STARTED: TaskStatus.RUNNING,
    EventType.TASK_PROGRESS: TaskStatus.RUNNING,
    EventType.TASK_RETRYING: TaskStatus.QUEUED,
    EventType.TASK_SUCCEEDED: TaskStatus.SUCCEEDED,
    EventType.TASK_FAILED: TaskStatus.FAILED,
    EventType.TASK_CANCELLED: TaskStatus.CANCELLED,
    EventType.TASK_SKIPPED: TaskStatus.SKIPPED,
}


@dataclass(frozen=True)
class Step:
    phase: str
    state: str  # done, current, blocked, failed, cancelled, todo


def phase_steps(ticket: TicketState) -> list[Step]:
    """The five-step bar: what is behind the ticket, where it is, what is ahead."""
    if ticket.status is TicketStatus.DONE or ticket.phase is Phase.DONE:
        return [Step(p.value, "done") for p in WORK_PHASES]
    here = ticket.blocked_from if ticket.phase is Phase.BLOCKED else ticket.phase
    if ticket.status is TicketStatus.FAILED:
        current = "failed"
    elif ticket.status is TicketStatus.CANCELLED:
        current = "cancelled"
    elif ticket.phase is Phase.BLOCKED:
        current = "blocked"
    else:
        current = "current"
    index = WORK_PHASES.index(here) if here in WORK_PHASES else 0
    return [
        Step(p.value, "done" if i < index else current if i == index else "todo")
        for i, p in enumerate(WORK_PHASES)
    ]


@dataclass
class Column:
    phase: str
    tasks: list[TaskState] = field(default_factory=list)


def task_columns(tasks: list[TaskState]) -> list[Column]:
    """Tasks grouped by phase, in phase order; phases without tasks still get a column."""
    columns = {p.value: Column(p.value) for p in WORK_PHASES}
    for task in tasks:
        columns.setdefault(task.phase.value, Column(task.phase.value)).tasks.append(task)
    return list(columns.values())


@dataclass(frozen=True)
class Branch:
    """A task's branch as the ticket page shows it: where it started, what it holds."""

    task: str
    branch: str
    kind: str  # "work", "merge", "resolution", "split"
    base: list[str]
    commit: str | None
    files: list[str]
    worker: str | None
    assigned: str | None


def branches(tasks: list[TaskState]) -> list[Branch]:
    """The git ticket's branches, in the order their tasks were made."""
    out = []
    for t in tasks:
        if not t.base and (t.result is None or not t.result.commit):
            continue
        kind = "work"
        if t.resolves:
            kind = "resolution"
        elif t.fanned_out:
            kind = "split"
        elif t.is_merge:
            kind = "merge"
        out.append(
            Branch(
                task=t.name,
                branch=task_branch(t.name),
                kind=kind,
                base=[c[:12] for c in t.base],
                commit=t.result.commit[:12] if t.result and t.result.commit else None,
                files=t.result.files[:20] if t.result else [],
                worker=t.worker,
                assigned=t.assigned,
            )
        )
    return out


def task_duration(task: TaskState) -> float | None:
    if task.started_at is None:
        return None
    end = task.finished_at or utcnow()
    return max((end - task.started_at).total_seconds(), 0.0)


@dataclass(frozen=True)
class Failure:
    seq: int
    type: str
    ticket_id: str
    task: str | None
    at: datetime | None
    message: str


def _message(kind: str, data: dict[str, Any]) -> str:
    error = data.get("error")
    if isinstance(error, dict):
        return f"{error.get('category', '')}: {error.get('message', '')}".strip(": ")
    if kind == EventType.GATE_FAILED:
        return str(data.get("feedback") or "gate failed")[:300]
    return str(data.get("reason") or "")


def failure(entry: StreamEntry) -> Failure | None:
    try:
        event = json.loads(entry.data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(event, dict):
        return None
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    kind = str(event.get("type", ""))
    return Failure(
        seq=entry.seq,
        type=kind,
        ticket_id=str(event.get("ticket_id", "")),
        task=event.get("task") if isinstance(event.get("task"), str) else None,
        at=entry.at,
        message=_message(kind, data or {})[:300],
    )


def age(when: datetime | None, now: datetime | None = None) -> str:
    """A short relative time ("12s ago"); the page's script keeps it current."""
    if when is None:
        return ""
    seconds = max(((now or utcnow()) - when).total_seconds(), 0.0)
    if seconds < 60:
        return f"{seconds:.0f}s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m ago"
    if seconds < 86400:
        return f"{seconds / 3600:.0f}h ago"
    return f"{seconds / 86400:.0f}d ago"


def seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.1f}s" if value < 120 else f"{value / 60:.1f}m"
