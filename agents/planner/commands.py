"""Operator commands: cancel a ticket, cancel a task, move a ticket to another phase,
pause a ticket and resume it, set its priority, deliver it again."""

from __future__ import annotations

import logging

from agents.errors import CommandError, TransitionError
from agents.events import ticket_event
from agents.planner import delivery
from agents.planner.apply import Reconciler, merge_context
from agents.planner.discoveries import Desk
from agents.planner.phases import check_transition, phase_index
from bus import Bus
from bus import constants as c
from schemas import (
    CancelTask,
    CancelTicket,
    DeliverTicket,
    EventType,
    MoveTicket,
    PauseTicket,
    Phase,
    PhaseTransition,
    PullRequestUpdate,
    ResumeTicket,
    SetPriority,
    TaskState,
    TaskStatus,
    TicketStatus,
    split_task_key,
    utcnow,
)
from schemas.discovery import DiscoveryDecision
from schemas.ticket import GateStatus, PhaseContext, TicketState

log = logging.getLogger(__name__)

# Moving back to this phase re-runs it and every phase after it up to where the ticket was.
REWORK_FROM = Phase.IMPLEMENTATION


class Commands:
    def __init__(self, bus: Bus, reconciler: Reconciler, desk: Desk) -> None:
        self.bus = bus
        self.reconciler = reconciler
        self.desk = desk

    async def _ticket(self, ticket_id: str) -> TicketState:
        ticket = await self.bus.tickets.value(ticket_id)
        if ticket is None:
            raise CommandError(f"no ticket {ticket_id!r}", "not_found")
        return ticket

    async def cancel_ticket(self, cmd: CancelTicket) -> TicketState:
        before = await self._ticket(cmd.ticket_id)

        def cancel(t: TicketState) -> TicketState | None:
            if t.status.terminal:
                return None
            t.status = TicketStatus.CANCELLED
            t.reason = cmd.reason
            t.finished_at = t.updated_at = utcnow()
            return t

        after = await self.bus.tickets.update(cmd.ticket_id, cancel)
        if after is None:
            raise CommandError(
                f"ticket {cmd.ticket_id} is already {before.status.value}", "already_finished"
            )
        keys = [f"{after.id}.{name}" for name in after.tasks]
        await self.reconciler.end_tasks(
            keys, TaskStatus.CANCELLED, cmd.reason, EventType.TASK_CANCELLED
        )
        await self.reconciler.emit_ticket_changes(before, after)
        return after

    async def cancel_task(self, cmd: CancelTask) -> TaskState:
        try:
            split_task_key(cmd.task_id)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        existing = await self.bus.tasks.value(cmd.task_id)
        if existing is None:
            raise CommandError(f"no task {cmd.task_id!r}", "not_found")
        task = await self.reconciler.end_task(
            cmd.task_id, TaskStatus.CANCELLED, cmd.reason, EventType.TASK_CANCELLED
        )
        if task is None:
            raise CommandError(
                f"task {cmd.task_id} is already {existing.status.value}", "already_finished"
            )
        # The planner's own event consumer sees task.cancelled and winds the ticket down.
        return task

    async def pause_ticket(self, cmd: PauseTicket) -> TicketState:
        """Nothing new starts (`plan` decides nothing for a paused ticket); what runs
        finishes, and its outcome is recorded. Pausing a paused ticket changes nothing."""
        return await self._set_paused(cmd.ticket_id, True, cmd.reason)

    async def resume_ticket(self, cmd: ResumeTicket) -> TicketState:
        after = await self._set_paused(cmd.ticket_id, False, cmd.reason)
        await self.reconciler.reconcile(after.id)
        return after

    async def _set_paused(self, ticket_id: str, paused: bool, reason: str) -> TicketState:
        def change(t: TicketState) -> TicketState | None:
            if t.status.terminal or t.paused is paused:
                return None
            t.paused = paused
            t.paused_reason = reason if paused else None
            t.updated_at = utcnow()
            return t

        after = await self.bus.tickets.update(ticket_id, change)
        if after is None:
            current = await self._ticket(ticket_id)
            if current.status.terminal:
                raise CommandError(
                    f"ticket {ticket_id} is already {current.status.value}", "already_finished"
                )
            return current  # already as asked: the same answer as the first time
        kind = EventType.TICKET_PAUSED if paused else EventType.TICKET_RESUMED
        event = ticket_event(after, kind, self.reconciler.agent_id, reason=reason)
        # One per pause and per resume: each is a write of its own.
        event.id = f"{after.id}.{kind.value}.{after.updated_at.timestamp()}"
        await self.bus.publish_events([event])
        return after

    async def set_priority(self, cmd: SetPriority) -> TicketState:
        """The ticket's new priority, and its queued tasks moved to the lane it names."""
        before = await self._ticket(cmd.ticket_id)

        def change(t: TicketState) -> TicketState | None:
            if t.status.terminal or t.priority == cmd.priority:
                return None
            t.priority = cmd.priority
            t.updated_at = utcnow()
            return t

        after = await self.bus.tickets.update(cmd.ticket_id, change)
        if after is None:
            after = await self._ticket(cmd.ticket_id)
            if after.status.terminal:
                raise CommandError(
                    f"ticket {after.id} is already {after.status.value}", "already_finished"
                )
        else:
            event = ticket_event(
                after, EventType.TICKET_PRIORITY_CHANGED, self.reconciler.agent_id,
                priority=after.priority, was=before.priority, reason=cmd.reason,
            )  # fmt: skip
            event.id = f"{after.id}.priority.{after.updated_at.timestamp()}"
            await self.bus.publish_events([event])
        # Also when the ticket already had it: a planner that died after writing the
        # ticket moved nothing, and the command asked again finishes the job.
        await self._move_queued(after)
        await self.reconciler.reconcile(after.id)
        return after

    async def deliver_ticket(self, cmd: DeliverTicket) -> TicketState:
        """A failed delivery asked for again: the next reconcile sends a new request."""
        await self._ticket(cmd.ticket_id)
        after = await self.bus.tickets.update(cmd.ticket_id, delivery.retried)
        if after is not None:
            log.info("ticket %s: delivery asked for again (%s)", after.id, cmd.reason)
        await self.reconciler.reconcile(cmd.ticket_id)
        return after or await self._ticket(cmd.ticket_id)

    async def pull_request(self, cmd: PullRequestUpdate) -> TicketState:
        """A ticket's pull request merged, closed, or reviewed (a follow-up task)."""
        loaded = await self.reconciler.load(cmd.ticket_id)
        if loaded is None:
            raise CommandError(f"no ticket {cmd.ticket_id!r}", "not_found")
        before, tasks = loaded
        if cmd.action == "review":
            if cmd.review_id is None:
                raise CommandError("a review names its review_id", "invalid_command")
            task = delivery.review_task(before, tasks, cmd)
            await self.bus.tasks.create(task.id, task)
            after = await self.bus.tickets.update(
                cmd.ticket_id, lambda t: delivery.reopened(t, task)
            )
        else:
            after = await self.bus.tickets.update(
                cmd.ticket_id, lambda t: delivery.pull_request_ended(t, cmd)
            )
        if after is not None:
            log.info("ticket %s: pull request %s", after.id, cmd.action)
        await self.reconciler.reconcile(cmd.ticket_id)
        return after or await self._ticket(cmd.ticket_id)

    async def decide_discovery(self, cmd: DiscoveryDecision) -> TicketState:
        """An operator's answer to a held discovery: approved, it becomes a task."""
        loaded = await self.reconciler.load(cmd.ticket_id)
        if loaded is None:
            raise CommandError(f"no ticket {cmd.ticket_id!r}", "not_found")
        after = await self.desk.decide(*loaded, cmd)
        await self.reconciler.reconcile(cmd.ticket_id)
        return after

    async def _move_queued(self, ticket: TicketState) -> None:
        """Tasks waiting in the other lane, not yet taken, go back to be queued again (a
        new generation: their old dispatch is dropped by whoever gets it). A task waiting
        for its retry keeps its place: its message is the one it retries on."""
        lane = c.lane_of(ticket.priority)

        def requeue(t: TaskState) -> TaskState | None:
            if t.status is not TaskStatus.QUEUED or t.attempts or c.lane_of(t.priority) == lane:
                return None
            t.status = TaskStatus.BLOCKED
            t.generation += 1
            t.msg_seq, t.delivery = None, 0
            t.reason = f"moved to the {lane} lane"
            t.updated_at = utcnow()
            return t

        for name in ticket.tasks:
            await self.bus.tasks.update(f"{ticket.id}.{name}", requeue)

    async def move_ticket(self, cmd: MoveTicket) -> TicketState:
        before = await self._ticket(cmd.ticket_id)
        if before.status.terminal:
            raise CommandError(
                f"ticket {before.id} is {before.status.value}; only running tickets move",
                "already_finished",
            )
        try:
            check_transition(before.phase, cmd.phase, before.blocked_from)
        except TransitionError as exc:
            raise CommandError(str(exc), "invalid_transition") from exc

        leaving = before.blocked_from if before.phase is Phase.BLOCKED else before.phase
        handed: list[PhaseContext] = []
        if leaving is not None and _moves_past(leaving, cmd.phase):
            handed.append(await self.reconciler.hand_over(before, leaving))

        def move(t: TicketState) -> TicketState | None:
            if (t.phase, t.status) != (before.phase, before.status):
                return None
            _release_gates(t, cmd.phase)
            t.context = merge_context(t.context, handed)
            t.phase_history.append(PhaseTransition(from_=t.phase, to=cmd.phase, reason=cmd.reason))
            t.blocked_from = t.phase if cmd.phase is Phase.BLOCKED else None
            t.phase = cmd.phase
            if cmd.phase is Phase.DONE:
                t.status = TicketStatus.DONE
                t.reason = cmd.reason
                t.finished_at = utcnow()
            t.updated_at = utcnow()
            return t

        after = await self.bus.tickets.update(before.id, move)
        if after is None:
            raise CommandError(f"ticket {before.id} changed meanwhile; try again", "conflict")

        leaving, target = before.phase, cmd.phase
        if target is not Phase.BLOCKED and leaving is not Phase.BLOCKED:
            forward = target is Phase.DONE or phase_index(target) > phase_index(leaving)
            if forward:
                await self._skip_phase(after, leaving, cmd.reason)
            else:
                await self._rework(after, target, leaving)
        await self.reconciler.emit_ticket_changes(before, after)
        await self.reconciler.reconcile(after.id)
        return after

    async def _skip_phase(self, ticket: TicketState, phase: Phase, reason: str) -> None:
        for name in ticket.tasks:
            key = f"{ticket.id}.{name}"
            task = await self.bus.tasks.value(key)
            if task is not None and task.phase is phase:
                await self.reconciler.skip_task(key, reason, stop_running=True)

    async def _rework(self, ticket: TicketState, start: Phase, until: Phase) -> None:
        """Reset every task from `start` up to `until` so those phases run again."""
        span = range(phase_index(start), phase_index(until) + 1)
        for name in ticket.tasks:
            task = await self.bus.tasks.value(f"{ticket.id}.{name}")
            if task is not None and phase_index(task.phase) in span:
                await self.reconciler.reset_task(task.id, "phase re-entered")


def _release_gates(ticket: TicketState, target: Phase) -> None:
    """An operator's move decides over the gates it passes.

    Moving on past a phase overrides its gate. Releasing a ticket blocked by a gate
    back into that phase gives the gate a fresh set of attempts.
    """
    leaving = ticket.blocked_from if ticket.phase is Phase.BLOCKED else ticket.phase
    if leaving is None or leaving not in ticket.gates:
        return
    gate = ticket.gates[leaving]
    if target is leaving:
        gate.status = GateStatus.NONE
        gate.failures = 0
    elif _moves_past(leaving, target):
        gate.status = GateStatus.OVERRIDDEN


def _moves_past(leaving: Phase, target: Phase) -> bool:
    return target is Phase.DONE or (
        target is not Phase.BLOCKED
        and leaving is not Phase.BLOCKED
        and phase_index(target) > phase_index(leaving)
    )
