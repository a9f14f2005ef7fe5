"""Phase gates from the planner's side: ask for a verdict, and act on the verdict.

A passed gate lets the ticket move on. A failed one queues a fix task carrying the
verdict's feedback (in the gate's `fix_phase`, e.g. testing sends it back to
implementation) until `max_gate_attempts` verdicts have failed; then the ticket is
blocked with the reason, for an operator to release with `omoi ticket move`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from agents.events import ticket_event
from agents.planner.merges import head_commit, leaves
from agents.planner.phases import phase_index
from bus import Bus
from bus.constants import gate_subject
from schemas import Event, EventType, Phase, PhaseTransition, TaskState, TaskStatus, utcnow
from schemas.gate import GateRequest, GateVerdict
from schemas.ticket import GateState, GateStatus, TicketState

log = logging.getLogger(__name__)

KEEP_VERDICTS = 5


def gate_msg_id(ticket_id: str, phase: Phase, attempt: int, resent: int = 0) -> str:
    base = f"gate.{ticket_id}.{phase.value}.{attempt}"
    return f"{base}.resent{resent}" if resent else base


def fix_task_name(phase: Phase, attempt: int) -> str:
    return f"fix-{phase.value}-{attempt}"


def mark_pending(ticket: TicketState, phase: Phase, commit: str | None) -> None:
    gate = ticket.gates.setdefault(phase, GateState())
    gate.attempts += 1
    gate.status = GateStatus.PENDING
    gate.commit = commit
    gate.resent = 0


def mark_resent(ticket: TicketState, phase: Phase, judged: GateState) -> TicketState | None:
    """The ticket with `phase`'s lost request counted as sent again, if the gate is still
    where it was judged lost."""
    gate = ticket.gates.get(phase)
    if (
        gate is None
        or gate.status is not GateStatus.PENDING
        or (gate.attempts, gate.resent) != (judged.attempts, judged.resent)
    ):
        return None
    gate.resent += 1
    ticket.updated_at = utcnow()
    return ticket


def build_request(ticket: TicketState, tasks: Mapping[str, TaskState], phase: Phase) -> GateRequest:
    """The request for a gate's verdict. It names no place: the validator checks the commit
    out of the ticket's published workspace (`omoi_workspaces`)."""
    gate = ticket.gates[phase]
    acceptance = [c for t in tasks.values() if t.phase is phase for c in t.acceptance]
    return GateRequest(
        ticket_id=ticket.id,
        phase=phase,
        attempt=gate.attempts,
        base_commit=head_commit(tasks, before=phase),
        commit=gate.commit,
        spec=ticket.gate_specs[phase],
        acceptance=list(dict.fromkeys(acceptance)),
        title=ticket.title,
        description=ticket.description,
    )


async def publish_request(
    bus: Bus, request: GateRequest, agent_id: str, *, resent: int = 0
) -> None:
    await bus.enqueue(
        gate_subject(request.phase.value, request.ticket_id),
        request.to_json(),
        gate_msg_id(request.ticket_id, request.phase, request.attempt, resent),
        request.ticket_id,
    )
    await bus.publish_event(
        Event(
            id=f"{request.ticket_id}.gate.{request.phase.value}.{request.attempt}.requested",
            type=EventType.GATE_REQUESTED,
            ticket_id=request.ticket_id,
            agent=agent_id,
            data={
                "phase": request.phase.value,
                "attempt": request.attempt,
                "commit": request.commit,
            },
        )
    )


def fix_instructions(ticket: TicketState, verdict: GateVerdict, tasks: list[TaskState]) -> str:
    original = "\n\n".join(
        f"### {t.name}\n{(t.instructions or t.command or t.name).strip()}" for t in tasks
    )
    return (
        f"The {verdict.phase.value} gate of ticket {ticket.id} failed "
        f"(attempt {verdict.attempt}). Fix the work so that the gate passes.\n\n"
        f"## Gate feedback\n\n{verdict.feedback.strip() or 'no details'}\n\n"
        f"## What the {verdict.phase.value} phase was asked to do\n\n{original}"
    )


def apply_verdict(
    ticket: TicketState, verdict: GateVerdict, fix: TaskState | None
) -> TicketState | None:
    """The ticket after a verdict (None when the verdict is stale or already applied)."""
    gate = ticket.gates.get(verdict.phase)
    if gate is None or gate.status is not GateStatus.PENDING or gate.attempts != verdict.attempt:
        return None
    gate.verdicts = [*gate.verdicts, verdict][-KEEP_VERDICTS:]
    ticket.updated_at = utcnow()
    if verdict.passed:
        gate.status = GateStatus.PASSED
        return ticket
    gate.failures += 1
    if fix is None:
        gate.status = GateStatus.FAILED
        reason = (
            f"{verdict.phase.value} gate failed {gate.failures} times: "
            + (verdict.feedback.strip().splitlines() or ["no details"])[0][:300]
        )
        ticket.phase_history.append(
            PhaseTransition(from_=ticket.phase, to=Phase.BLOCKED, reason=reason)
        )
        ticket.blocked_from = ticket.phase
        ticket.phase = Phase.BLOCKED
        ticket.reason = reason
        return ticket
    if fix.name not in ticket.tasks:
        ticket.tasks.append(fix.name)
    # Every gate from the fix's phase up to this one must be passed again.
    for phase, other in ticket.gates.items():
        if phase_index(fix.phase) <= phase_index(phase) <= phase_index(verdict.phase):
            other.status = GateStatus.NONE
    if fix.phase is not ticket.phase:
        ticket.phase_history.append(
            PhaseTransition(
                from_=ticket.phase,
                to=fix.phase,
                reason=f"{verdict.phase.value} gate failed: fixing in {fix.phase.value}",
            )
        )
        ticket.phase = fix.phase
    return ticket


def fix_task(
    ticket: TicketState, tasks: Mapping[str, TaskState], verdict: GateVerdict
) -> TaskState | None:
    """The task that fixes a failed gate, or None when no attempts are left."""
    gate = ticket.gates.get(verdict.phase)
    failures = (gate.failures if gate is not None else 0) + 1
    if verdict.passed or failures >= ticket.max_gate_attempts:
        return None
    spec = ticket.gate_specs[verdict.phase]
    phase = spec.fix_phase or verdict.phase
    in_phase = [t for t in tasks.values() if t.phase is verdict.phase and t.origin is None]
    name = fix_task_name(verdict.phase, verdict.attempt)
    return TaskState(
        id=f"{ticket.id}.{name}",
        ticket_id=ticket.id,
        name=name,
        phase=phase,
        capability=spec.fix_capability,
        instructions=fix_instructions(ticket, verdict, in_phase),
        acceptance=[c for t in in_phase for c in t.acceptance],
        # On top of the fix phase's work: its head is the fix's base.
        depends_on=[t.name for t in leaves(tasks, phase)],
        max_retries=1,
        origin=f"gate:{verdict.phase.value}:{verdict.attempt}",
    )


def needs_rerun(task: TaskState, fix_phase: Phase, gate_phase: Phase) -> bool:
    """Tasks after the fix's phase, up to the failed gate's, run again after a fix."""
    return (
        phase_index(fix_phase) < phase_index(task.phase) <= phase_index(gate_phase)
        and task.status is not TaskStatus.BLOCKED
    )


def blocked_event(ticket: TicketState, agent_id: str) -> Event:
    return ticket_event(ticket, EventType.TICKET_BLOCKED, agent_id, reason=ticket.reason)
