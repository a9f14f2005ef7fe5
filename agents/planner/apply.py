"""Carry out a reconcile plan against the buckets, and emit what changed."""

from __future__ import annotations

import logging

from agents.events import task_event, ticket_event
from agents.planner.reconcile import Plan, plan
from bus import Bus
from bus.constants import control_cancel_subject
from schemas import Event, EventType, Phase, TaskState, TaskStatus, TicketStatus, utcnow
from schemas.ticket import TicketState

log = logging.getLogger(__name__)

MAX_REPLANS = 20


class Reconciler:
    """Brings a ticket's state forward: queue ready tasks, pass phases, finish tickets."""

    def __init__(self, bus: Bus, agent_id: str) -> None:
        self.bus = bus
        self.agent_id = agent_id

    async def load(self, ticket_id: str) -> tuple[TicketState, dict[str, TaskState]] | None:
        ticket = await self.bus.tickets.value(ticket_id)
        if ticket is None:
            return None
        tasks = {}
        for name in ticket.tasks:
            task = await self.bus.tasks.value(f"{ticket_id}.{name}")
            if task is not None:
                tasks[name] = task
        return ticket, tasks

    async def reconcile(self, ticket_id: str, *, redispatch: bool = False) -> TicketState | None:
        """Apply plans until the ticket needs nothing more right now.

        `redispatch` re-publishes tasks that are queued but unclaimed: after a planner
        crash, the dispatch may never have reached the stream. The dispatch's msg id
        makes this a no-op when it did (within the duplicate window), and a worker drops
        a duplicate it finds later.
        """
        for _ in range(MAX_REPLANS):
            loaded = await self.load(ticket_id)
            if loaded is None:
                return None
            ticket, tasks = loaded
            if redispatch:
                redispatch = False
                for task in tasks.values():
                    if task.status is TaskStatus.QUEUED and task.msg_seq is None:
                        await self.bus.dispatch(task)
            decided = plan(ticket, tasks)
            if decided.empty:
                return ticket
            if not await self._apply(ticket, decided):
                continue  # somebody changed the ticket under us: decide again
        log.warning("ticket %s still changing after %d plans", ticket_id, MAX_REPLANS)
        return None

    async def _apply(self, ticket: TicketState, decided: Plan) -> bool:
        for name, reason in decided.skip.items():
            await self.skip_task(f"{ticket.id}.{name}", reason)

        if decided.transitions or decided.finish:
            expected = (ticket.phase, ticket.status)

            def advance(t: TicketState) -> TicketState | None:
                if (t.phase, t.status) != expected:
                    return None
                for step in decided.transitions:
                    t.phase_history.append(step)
                    t.phase = step.to
                if decided.finish:
                    t.status = decided.finish
                    t.reason = decided.reason
                    t.finished_at = utcnow()
                t.updated_at = utcnow()
                return t

            updated = await self.bus.tickets.update(ticket.id, advance)
            if updated is None:
                return False
            await self.emit_ticket_changes(ticket, updated)

        for name in decided.queue:
            await self.queue_task(f"{ticket.id}.{name}")
        return True

    async def emit_ticket_changes(self, before: TicketState, after: TicketState) -> None:
        for i, step in enumerate(after.phase_history[len(before.phase_history) :]):
            n = len(before.phase_history) + i + 1
            await self.bus.publish_event(
                Event(
                    id=f"{after.id}.phase_changed.{n}",
                    type=EventType.TICKET_PHASE_CHANGED,
                    ticket_id=after.id,
                    agent=self.agent_id,
                    data={
                        "phase": step.to.value,
                        "from": step.from_.value if step.from_ else None,
                        "to": step.to.value,
                        "reason": step.reason,
                    },
                )
            )
        if after.status is not before.status:
            kind = {
                TicketStatus.DONE: EventType.TICKET_DONE,
                TicketStatus.FAILED: EventType.TICKET_FAILED,
                TicketStatus.CANCELLED: EventType.TICKET_CANCELLED,
            }.get(after.status)
            if kind is not None:
                await self.bus.publish_event(
                    ticket_event(after, kind, self.agent_id, reason=after.reason)
                )

    async def queue_task(self, key: str) -> None:
        def to_queued(t: TaskState) -> TaskState | None:
            if t.status is not TaskStatus.BLOCKED:
                return None
            t.status = TaskStatus.QUEUED
            t.queued_at = t.updated_at = utcnow()
            return t

        task = await self.bus.tasks.update(key, to_queued)
        if task is not None:
            await self.bus.dispatch(task)
            await self.bus.publish_event(task_event(task, EventType.TASK_QUEUED, self.agent_id))

    async def skip_task(self, key: str, reason: str, *, stop_running: bool = False) -> None:
        # A failure elsewhere never skips running work: it finishes, then the ticket
        # fails. Only an operator moving the ticket on stops running tasks this way.
        await self.end_task(
            key, TaskStatus.SKIPPED, reason, EventType.TASK_SKIPPED, stop_running=stop_running
        )

    async def end_task(
        self,
        key: str,
        status: TaskStatus,
        reason: str,
        kind: EventType,
        *,
        stop_running: bool = True,
    ) -> TaskState | None:
        """Move a not-yet-finished task to a final `status`, stopping it if it runs."""
        was_running = False

        def finish(t: TaskState) -> TaskState | None:
            nonlocal was_running
            if t.status.terminal or (t.status is TaskStatus.RUNNING and not stop_running):
                return None
            was_running = t.status is TaskStatus.RUNNING
            t.status = status
            t.reason = reason
            t.finished_at = t.updated_at = utcnow()
            return t

        task = await self.bus.tasks.update(key, finish)
        if task is None:
            return None
        if was_running:
            await self.bus.nc.publish(control_cancel_subject(task.ticket_id, task.name), b"")
        await self.bus.publish_event(task_event(task, kind, self.agent_id, reason=reason))
        return task

    async def running_tickets(self) -> list[str]:
        tickets = await self.bus.tickets.values()
        return [
            t.id for t in tickets if t.status is TicketStatus.RUNNING and t.phase is not Phase.DONE
        ]
