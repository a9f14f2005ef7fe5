"""Discoveries from the planner's side: judge what an agent reported, make a task of it.

`judge` is pure. A discovery is rejected when the ticket cannot take more work (finished,
blocked, over its budget, at its discovery limit), when it comes from too deep a chain of
discoveries (each task made of one is a level deeper: a loop ends there), or when it
repeats a task or discovery the ticket has (by the words they share). It is held for an
operator when it would open a phase the ticket has no work in, or when the agent's
estimate is over the threshold. Otherwise it becomes a task in its phase, or in the
ticket's current phase when that one is already past, on top of that phase's work.

`Desk` applies the judgement once per discovery id (compare-and-set on the ticket) and
announces it: `discovery.accepted`, `discovery.rejected` or `discovery.held`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from agents.errors import CommandError
from agents.planner.merges import leaves
from agents.planner.phases import phase_index
from bus import Bus
from schemas import WORK_PHASES, Event, EventType, TaskState, utcnow
from schemas.discovery import (
    DEFAULT_PHASE,
    DISCOVERY_ORIGIN,
    DiscoveryDecision,
    DiscoveryReport,
    DiscoveryState,
    DiscoveryStatus,
    DiscoveryVerdict,
)
from schemas.task import task_key
from schemas.ticket import TicketState
from schemas.usage import Usage
from store.memory import terms

log = logging.getLogger(__name__)

CAPABILITY = "agent"


@dataclass(frozen=True)
class Limits:
    max_depth: int = 2
    max_per_ticket: int = 10
    approval_usd: float = 1.0
    similar: float = 0.6


def similarity(a: str, b: str) -> float:
    """The share of words two texts have in common (Jaccard over search terms)."""
    x, y = set(terms(a)), set(terms(b))
    return len(x & y) / len(x | y) if x and y else 0.0


def judge(
    ticket: TicketState, tasks: Mapping[str, TaskState], report: DiscoveryReport, limits: Limits
) -> tuple[DiscoveryVerdict, str]:
    if (why := _refusal(ticket, tasks, report, limits)) is not None:
        return "reject", why
    if (held := hold_cause(ticket, tasks, report, limits)) is not None:
        return "hold", held[1]
    return "accept", "new work, within the ticket's limits"


def hold_cause(
    ticket: TicketState, tasks: Mapping[str, TaskState], report: DiscoveryReport, limits: Limits
) -> tuple[Literal["phase", "estimate"], str] | None:
    """Why a discovery the ticket could take waits for approval (cause, reason), if it does."""
    found = report.discovery
    phase = found.phase or DEFAULT_PHASE[found.kind]
    if phase_index(phase) > phase_index(ticket.phase) and not any(
        t.phase is phase for t in tasks.values()
    ):
        return "phase", f"it opens the {phase.value} phase, which has no work yet"
    if found.estimate_usd is not None and found.estimate_usd > limits.approval_usd:
        return "estimate", (
            f"its estimate ${found.estimate_usd:.2f} is over ${limits.approval_usd:.2f}"
        )
    return None


def _refusal(
    ticket: TicketState, tasks: Mapping[str, TaskState], report: DiscoveryReport, limits: Limits
) -> str | None:
    """Why the ticket cannot take this discovery, if it cannot."""
    if ticket.status.terminal or ticket.phase not in WORK_PHASES:
        return f"ticket {ticket.id} is {ticket.status.value} in {ticket.phase.value}"
    if report.depth + 1 > limits.max_depth:
        return (
            f"it comes from a chain of {report.depth} discoveries; the limit is {limits.max_depth}"
        )
    taken = [d for d in ticket.discoveries if d.status is not DiscoveryStatus.REJECTED]
    if len(taken) >= limits.max_per_ticket:
        return f"the ticket has {len(taken)} discoveries, its limit"
    if ticket.budget is not None and (
        why := ticket.budget.exhausted_by(Usage.total(t.usage for t in tasks.values()))
    ):
        return f"the ticket's budget is spent: {why}"
    found = report.discovery
    text = f"{found.title}\n{found.description}"
    for task in tasks.values():
        if similarity(text, f"{task.name}\n{task.instructions or task.command or ''}") >= (
            limits.similar
        ):
            return f"it repeats task {task.name}"
    for other in taken:
        if similarity(found.title, other.title) >= limits.similar:
            return f"it repeats discovery {other.id} ({other.title})"
    return None


def task_for(
    ticket: TicketState, tasks: Mapping[str, TaskState], report: DiscoveryReport
) -> TaskState:
    found = report.discovery
    phase = found.phase or DEFAULT_PHASE[found.kind]
    if phase_index(phase) < phase_index(ticket.phase):
        phase = ticket.phase  # that phase is past: the work goes on from here
    name = f"discovered-{report.id.rsplit('.', 2)[-2][:40]}-{report.id.rsplit('.', 1)[-1]}"
    return TaskState(
        id=task_key(ticket.id, name),
        ticket_id=ticket.id,
        name=name,
        phase=phase,
        capability=CAPABILITY,
        instructions=(
            f"While working on task {report.from_task}, an agent found this "
            f"({found.kind.replace('_', ' ')}): {found.title}\n\n{found.description}".strip()
        ),
        depends_on=[t.name for t in leaves(tasks, phase)],
        max_retries=1,
        origin=f"{DISCOVERY_ORIGIN}{report.depth + 1}:{report.id}",
    )


def recorded(ticket: TicketState, state: DiscoveryState) -> TicketState | None:
    """The ticket with a discovery's judgement (and its task listed); None if judged."""
    if any(d.id == state.id for d in ticket.discoveries):
        return None
    ticket.discoveries.append(state)
    if state.task is not None and state.task not in ticket.tasks:
        ticket.tasks.append(state.task)
    ticket.updated_at = utcnow()
    return ticket


def decided(ticket: TicketState, decision: DiscoveryDecision, task: str | None) -> TicketState:
    held = next((d for d in ticket.discoveries if d.id == decision.discovery_id), None)
    if held is None or held.status is not DiscoveryStatus.HELD:
        raise CommandError(
            f"ticket {ticket.id} has no held discovery {decision.discovery_id!r}", "not_found"
        )
    held.status = DiscoveryStatus.ACCEPTED if decision.approve else DiscoveryStatus.REJECTED
    held.reason = decision.reason
    held.task = task
    held.report = None
    held.held_for = None
    if task is not None and task not in ticket.tasks:
        ticket.tasks.append(task)
    ticket.updated_at = utcnow()
    return ticket


class Desk:
    """Where discoveries are judged and made work of."""

    def __init__(self, bus: Bus, agent_id: str, limits: Limits) -> None:
        self.bus = bus
        self.agent_id = agent_id
        self.limits = limits

    async def record(
        self, ticket: TicketState, tasks: Mapping[str, TaskState], report: DiscoveryReport
    ) -> None:
        if any(d.id == report.id for d in ticket.discoveries):
            return  # judged already (a redelivered report)
        verdict, reason = judge(ticket, tasks, report, self.limits)
        task = task_for(ticket, tasks, report) if verdict == "accept" else None
        if task is not None:
            await self.bus.tasks.create(task.id, task)
        status = {"accept": DiscoveryStatus.ACCEPTED, "reject": DiscoveryStatus.REJECTED,
                  "hold": DiscoveryStatus.HELD}[verdict]  # fmt: skip
        held = hold_cause(ticket, tasks, report, self.limits) if verdict == "hold" else None
        state = DiscoveryState(
            id=report.id, from_task=report.from_task, kind=report.discovery.kind,
            title=report.discovery.title, status=status, reason=reason,
            task=task.name if task else None, report=report if verdict == "hold" else None,
            held_for=held[0] if held else None, estimate_usd=report.discovery.estimate_usd,
        )  # fmt: skip
        if await self.bus.tickets.update(ticket.id, lambda t: recorded(t, state)) is None:
            return
        log.info("ticket %s: discovery %s %s (%s)", ticket.id, report.id, status.value, reason)
        await self.announce(ticket.id, state)

    async def decide(
        self, ticket: TicketState, tasks: Mapping[str, TaskState], decision: DiscoveryDecision
    ) -> TicketState:
        held = next((d for d in ticket.discoveries if d.id == decision.discovery_id), None)
        task = None
        if decision.approve and held is not None and held.report is not None:
            task = task_for(ticket, tasks, held.report)
            await self.bus.tasks.create(task.id, task)
        name = task.name if task else None
        after = await self.bus.tickets.update(ticket.id, lambda t: decided(t, decision, name))
        assert after is not None
        state = next(d for d in after.discoveries if d.id == decision.discovery_id)
        await self.announce(ticket.id, state)
        return after

    async def announce(self, ticket_id: str, state: DiscoveryState) -> None:
        kind = {
            DiscoveryStatus.ACCEPTED: EventType.DISCOVERY_ACCEPTED,
            DiscoveryStatus.REJECTED: EventType.DISCOVERY_REJECTED,
            DiscoveryStatus.HELD: EventType.DISCOVERY_HELD,
        }[state.status]
        await self.bus.publish_event(
            Event(
                id=f"{state.id}.{kind.value}",
                type=kind,
                ticket_id=ticket_id,
                task=state.from_task,
                agent=self.agent_id,
                data=state.model_dump(mode="json", exclude={"report"}),
            )
        )
