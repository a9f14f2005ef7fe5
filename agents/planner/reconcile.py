"""Decide what a ticket needs next, from its state alone.

`plan` is a pure function of the ticket and its tasks, so it can run any number of times
(after a crash, on a duplicate event, from two planners at once) and reach the same
decision; applying the decision is idempotent because every write is a compare-and-set
from the state the decision was made on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from agents.planner import delivery, merges, split
from agents.planner.graph import dependents
from agents.planner.phases import next_phase
from schemas import Phase, PhaseTransition, TaskState, TaskStatus, TicketStatus
from schemas.delivery import DeliveryStatus
from schemas.lock import conflicting
from schemas.ticket import GateStatus, TicketState

FAILED_OUTCOMES = frozenset({TaskStatus.FAILED, TaskStatus.CANCELLED})
# A dependency is satisfied once it succeeded, or was skipped by an operator moving
# the ticket past its phase (skips caused by failures never reach the queue step).
SATISFIED = frozenset({TaskStatus.SUCCEEDED, TaskStatus.SKIPPED})
GATE_OPEN = frozenset({GateStatus.PASSED, GateStatus.OVERRIDDEN})


@dataclass
class Plan:
    skip: dict[str, str] = field(default_factory=dict)
    queue: list[str] = field(default_factory=list)
    transitions: list[PhaseTransition] = field(default_factory=list)
    # The phase whose work is done and whose gate must now be asked for a verdict.
    request_gate: Phase | None = None
    # The work is done and must now be pushed to the ticket's repository.
    request_delivery: bool = False
    finish: TicketStatus | None = None
    reason: str = ""
    # What each queued task of a git ticket starts from (`TaskState.base`).
    bases: dict[str, list[str]] = field(default_factory=dict)
    # Tasks the planner adds: a phase's merge.
    add: list[TaskState] = field(default_factory=list)
    # Conflicted task -> the task that resolves its conflict (it then runs again on it).
    resolve: dict[str, TaskState] = field(default_factory=dict)
    # Split task -> its subtasks, to make now.
    fan_out: dict[str, list[TaskState]] = field(default_factory=dict)
    # Tasks that fail without running, and why (a split over something that is no list).
    fail: dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (
            self.skip
            or self.queue
            or self.transitions
            or self.finish
            or self.request_gate
            or self.request_delivery
            or self.add
            or self.resolve
            or self.fan_out
            or self.fail
        )


def plan(ticket: TicketState, tasks: Mapping[str, TaskState]) -> Plan:
    out = Plan()
    if ticket.status is not TicketStatus.RUNNING or ticket.phase is Phase.BLOCKED:
        return out
    if ticket.paused:
        return out  # resuming reconciles it: everything decided then, from the state then

    for task in tasks.values():
        if merges.conflicted(task) and (fix := merges.resolution(ticket, tasks, task)):
            out.resolve[task.name] = fix
    failed = sorted(
        t.name for t in tasks.values() if t.status in FAILED_OUTCOMES and t.name not in out.resolve
    )
    if failed and ticket.on_failure == "fail_fast":
        return _wind_down(tasks, failed, out)
    if failed:
        _skip_dependents(tasks, failed, out)

    _walk_phases(ticket, tasks, failed, out)
    if ticket.versioned:
        out.bases = {name: _base(tasks[name], tasks) for name in out.queue}
    return out


def _walk_phases(
    ticket: TicketState, tasks: Mapping[str, TaskState], failed: list[str], out: Plan
) -> None:
    """From the ticket's phase on: queue what is ready, else pass each finished phase
    (after its merge and its gate), until one still has work."""
    phase: Phase = ticket.phase
    while phase is not Phase.DONE:
        in_phase = [t for t in tasks.values() if t.phase is phase]
        ready = [n for n in _ready(in_phase, tasks) if n not in out.skip]
        waiting = split.held_at_barrier(ready, tasks)
        ready = [n for n in ready if n not in waiting and not _fan_out(tasks[n], tasks, out)]
        out.queue.extend(_unlocked(ready, tasks))
        if out.queue or out.skip or out.resolve or out.fan_out or out.fail:
            return
        if any(not t.status.terminal for t in in_phase):
            return
        if failed:
            # `continue`: everything independent of the failure has finished.
            out.finish = TicketStatus.FAILED
            out.reason = _failed_reason(failed)
            return
        if ticket.versioned and (merge := merges.phase_merge(ticket, tasks, phase)):
            out.add.append(merge)  # one commit hands the phase on
            return
        if _gate_closed(ticket, phase):
            gate = ticket.gates.get(phase)
            if gate is None or gate.status is GateStatus.NONE:
                out.request_gate = phase
            return  # a verdict is pending, or the gate failed for good (ticket blocked)
        gate = ticket.gates.get(phase)
        target = next_phase(phase)
        if target is Phase.DONE and _delivering(ticket, tasks, out):
            return
        reason = f"{phase.value} complete" if in_phase else f"{phase.value} has no tasks"
        if gate is not None:
            reason += f", gate {gate.status.value}"
        out.transitions.append(PhaseTransition(from_=phase, to=target, reason=reason))
        phase = target
    out.finish = TicketStatus.DONE
    out.reason = "all phases complete"


def _delivering(ticket: TicketState, tasks: Mapping[str, TaskState], out: Plan) -> bool:
    """Whether the ticket's end waits for its delivery (asking for it, if not yet)."""
    if not ticket.deliver or merges.head_commit(tasks) is None:
        return False  # nothing of it to push
    now = delivery.status(ticket)
    if now is DeliveryStatus.NONE:
        out.request_delivery = True
    elif now is DeliveryStatus.CLOSED:
        out.finish = TicketStatus.CANCELLED
        out.reason = "its pull request was closed without being merged"
    return now is not DeliveryStatus.DELIVERED


def _ready(in_phase: list[TaskState], tasks: Mapping[str, TaskState]) -> list[str]:
    return [
        task.name
        for task in in_phase
        if task.status is TaskStatus.BLOCKED
        and all(tasks[d].status in SATISFIED for d in task.depends_on if d in tasks)
    ]


def _base(task: TaskState, tasks: Mapping[str, TaskState]) -> list[str]:
    # A handed-off task goes on from what its last holder committed.
    if task.handoff is not None and task.base:
        return task.base
    return merges.base_of(task, tasks)


def _fan_out(task: TaskState, tasks: Mapping[str, TaskState], out: Plan) -> bool:
    """A ready split task is fanned out instead of queued (or fails, its list bad)."""
    if task.split is None or task.fanned_out:
        return False
    made = split.fan_out(task, tasks)
    if isinstance(made, str):
        out.fail[task.name] = made
    else:
        out.fan_out[task.name] = made
    return True


def _unlocked(ready: list[str], tasks: Mapping[str, TaskState]) -> list[str]:
    """The ready tasks whose resources no queued or running task of the ticket (nor one
    queued before it now) claims in conflict; the rest wait for those to finish. Claims
    across tickets meet at the workers' locks."""
    claimed = [
        r
        for t in tasks.values()
        if t.status in (TaskStatus.QUEUED, TaskStatus.RUNNING)
        for r in t.resources
    ]
    out = []
    for name in ready:
        claims = tasks[name].resources
        if claims and conflicting(claims, claimed):
            continue
        claimed += claims
        out.append(name)
    return out


def _gate_closed(ticket: TicketState, phase: Phase) -> bool:
    gate = ticket.gates.get(phase)
    return phase in ticket.gate_specs and (gate is None or gate.status not in GATE_OPEN)


def _failed_reason(failed: list[str]) -> str:
    return f"task {', '.join(failed)} failed or was cancelled"


def _wind_down(tasks: Mapping[str, TaskState], failed: list[str], out: Plan) -> Plan:
    """`fail_fast`: a task finally failed, so start nothing new, and fail the ticket once
    nothing runs."""
    why = _failed_reason(failed)
    for task in tasks.values():
        if task.status in (TaskStatus.BLOCKED, TaskStatus.QUEUED):
            out.skip[task.name] = why
    if not any(t.status is TaskStatus.RUNNING for t in tasks.values()):
        out.finish = TicketStatus.FAILED
        out.reason = why
    return out


def _skip_dependents(tasks: Mapping[str, TaskState], failed: list[str], out: Plan) -> None:
    """`continue`: skip what depends on a failed task, directly or through others."""
    graph = {t.name: t.depends_on for t in tasks.values()}
    for name in failed:
        for dependent in sorted(dependents(graph, name)):
            task = tasks[dependent]
            if task.status in (TaskStatus.BLOCKED, TaskStatus.QUEUED):
                out.skip.setdefault(dependent, f"depends on task {name}, which failed")
