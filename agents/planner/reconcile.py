"""Decide what a ticket needs next, from its state alone.

`plan` is a pure function of the ticket and its tasks, so it can run any number of times
(after a crash, on a duplicate event, from two planners at once) and reach the same
decision; applying the decision is idempotent because every write is a compare-and-set
from the state the decision was made on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from agents.planner.phases import next_phase
from schemas import Phase, PhaseTransition, TaskState, TaskStatus, TicketStatus
from schemas.ticket import TicketState

FAILED_OUTCOMES = frozenset({TaskStatus.FAILED, TaskStatus.CANCELLED})
# A dependency is satisfied once it succeeded, or was skipped by an operator moving
# the ticket past its phase (skips caused by failures never reach the queue step).
SATISFIED = frozenset({TaskStatus.SUCCEEDED, TaskStatus.SKIPPED})


@dataclass
class Plan:
    skip: dict[str, str] = field(default_factory=dict)
    queue: list[str] = field(default_factory=list)
    transitions: list[PhaseTransition] = field(default_factory=list)
    finish: TicketStatus | None = None
    reason: str = ""

    @property
    def empty(self) -> bool:
        return not (self.skip or self.queue or self.transitions or self.finish)


def plan(ticket: TicketState, tasks: Mapping[str, TaskState]) -> Plan:
    out = Plan()
    if ticket.status is not TicketStatus.RUNNING or ticket.phase is Phase.BLOCKED:
        return out

    failed = sorted(t.name for t in tasks.values() if t.status in FAILED_OUTCOMES)
    if failed:
        return _wind_down(tasks, failed, out)

    phase: Phase = ticket.phase
    while phase is not Phase.DONE:
        in_phase = [t for t in tasks.values() if t.phase is phase]
        for task in in_phase:
            if task.status is TaskStatus.BLOCKED and all(
                tasks[d].status in SATISFIED for d in task.depends_on if d in tasks
            ):
                out.queue.append(task.name)
        if out.queue or any(not t.status.terminal for t in in_phase):
            break
        target = next_phase(phase)
        reason = f"{phase.value} complete" if in_phase else f"{phase.value} has no tasks"
        out.transitions.append(PhaseTransition(from_=phase, to=target, reason=reason))
        phase = target
    if phase is Phase.DONE:
        out.finish = TicketStatus.DONE
        out.reason = "all phases complete"
    return out


def _wind_down(tasks: Mapping[str, TaskState], failed: list[str], out: Plan) -> Plan:
    """A task finally failed: start nothing new, and fail the ticket once nothing runs."""
    why = f"task {', '.join(failed)} failed or was cancelled"
    for task in tasks.values():
        if task.status in (TaskStatus.BLOCKED, TaskStatus.QUEUED):
            out.skip[task.name] = why
    if not any(t.status is TaskStatus.RUNNING for t in tasks.values()):
        out.finish = TicketStatus.FAILED
        out.reason = why
    return out
