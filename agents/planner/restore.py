"""Carry out what `lost.find_lost` decides: queue lost tasks again, resend lost requests
(a gate's, a delivery's)."""

from __future__ import annotations

import logging
from datetime import timedelta

from agents.events import task_event
from agents.planner import delivery, gates
from agents.planner.lost import find_lost, requeued
from bus import Bus, Versioned
from bus import constants as c
from schemas import EventType, Phase, TaskState, utcnow
from schemas.ticket import TicketState

log = logging.getLogger(__name__)


class Restorer:
    """Gives queued or running work whose message is gone a new one (docs/architecture.md,
    rule 3). `lost_after_s` is how long state may go without its message first."""

    def __init__(self, bus: Bus, agent_id: str, *, lost_after_s: float = 10.0) -> None:
        self.bus = bus
        self.agent_id = agent_id
        self.lost_after_s = lost_after_s

    async def restore(self, ticket_ids: list[str]) -> int:
        """Check the rule for these (running) tickets; returns how many were restored."""
        taken_at = utcnow()
        task_subjects = await self.bus.live_subjects(c.TASKS_STREAM, c.TASKS_SUBJECTS)
        gate_subjects = await self.bus.live_subjects(c.GATES_STREAM, c.GATES_SUBJECTS)
        delivery_subjects = await self.bus.live_subjects(c.DELIVERIES_STREAM, c.DELIVERIES_SUBJECTS)
        before = taken_at - timedelta(seconds=self.lost_after_s)
        restored = 0
        for ticket_id in ticket_ids:
            ticket = await self.bus.tickets.value(ticket_id)
            if ticket is None:
                continue
            found = [await self.bus.tasks.get(f"{ticket.id}.{name}") for name in ticket.tasks]
            tasks = [t for t in found if t is not None]
            missing = find_lost(
                ticket, tasks, task_subjects, gate_subjects, delivery_subjects, before=before
            )
            for task in missing.tasks:
                restored += await self._requeue(task)
            for phase in missing.gates:
                restored += await self._resend_gate(ticket, phase, tasks)
            if missing.delivery:
                restored += await self._resend_delivery(ticket)
        return restored

    async def _requeue(self, judged: Versioned[TaskState]) -> int:
        now = utcnow()
        written = await self.bus.tasks.update_versioned(
            judged.value.id, lambda t: requeued(t, judged.value, now), known=judged
        )
        if written is None:
            return 0  # it moved on meanwhile: not lost after all
        task = written.value
        log.warning("task %s was %s without a message; queued again", task.id, judged.value.status)
        dispatched = await self.bus.dispatch_async(task, written.revision)
        announced = await self.bus.publish_event_async(
            task_event(
                task, EventType.TASK_REQUEUED, self.agent_id,
                reason=task.reason, was=judged.value.status.value, revision=written.revision,
            )
        )  # fmt: skip
        await self.bus.confirm(dispatched)
        await self.bus.confirm(announced)
        return 1

    async def _resend_gate(
        self, ticket: TicketState, phase: Phase, tasks: list[Versioned[TaskState]]
    ) -> int:
        judged = ticket.gates[phase]
        updated = await self.bus.tickets.update(
            ticket.id, lambda t: gates.mark_resent(t, phase, judged)
        )
        if updated is None:
            return 0  # the gate moved on meanwhile
        log.warning("ticket %s: the %s gate request was lost; sent again", ticket.id, phase.value)
        by_name = {t.value.name: t.value for t in tasks}
        request = gates.build_request(updated, by_name, phase)
        await gates.publish_request(
            self.bus, request, self.agent_id, resent=updated.gates[phase].resent
        )
        return 1

    async def _resend_delivery(self, ticket: TicketState) -> int:
        judged = ticket.delivery
        assert judged is not None
        updated = await self.bus.tickets.update(
            ticket.id, lambda t: delivery.mark_resent(t, judged)
        )
        if updated is None or updated.delivery is None:
            return 0  # the delivery moved on meanwhile
        log.warning("ticket %s: the delivery request was lost; sent again", ticket.id)
        await delivery.publish_request(
            self.bus, delivery.build_request(updated), self.agent_id, resent=updated.delivery.resent
        )
        return 1
