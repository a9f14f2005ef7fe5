"""Carry out a reconcile plan against the buckets, and emit what changed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from agents.events import task_event, ticket_event
from agents.llm.client import ModelClient
from agents.planner import context, delivery, gates
from agents.planner.assign import Assigner, Candidate
from agents.planner.merges import head_commit
from agents.planner.reconcile import Plan, plan
from agents.ticket_spans import record_task, record_ticket_changes
from bus import Bus
from bus.constants import (
    control_cancel_subject,
)
from schemas import Event, EventType, Phase, TaskState, TaskStatus, TicketStatus, utcnow
from schemas.common import Priority
from schemas.delivery import DeliveryReport
from schemas.gate import GateVerdict
from schemas.task import SPLIT_ORIGIN
from schemas.ticket import GateStatus, PhaseContext, TicketState

log = logging.getLogger(__name__)

MAX_REPLANS = 20


class Reconciler:
    """Brings a ticket's state forward: queue ready tasks, pass phases, finish tickets."""

    def __init__(
        self,
        bus: Bus,
        agent_id: str,
        *,
        model: ModelClient | None = None,
        context_tokens: int = 1200,
        assigner: Assigner | None = None,
    ) -> None:
        self.bus = bus
        self.agent_id = agent_id
        self.model = model
        self.context_tokens = context_tokens
        self.assigner = assigner

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

    async def reconcile(self, ticket_id: str) -> None:
        """Apply plans until the ticket needs nothing more right now."""
        for _ in range(MAX_REPLANS):
            loaded = await self.load(ticket_id)
            if loaded is None:
                return
            ticket, tasks = loaded
            decided = plan(ticket, tasks)
            if decided.empty:
                return
            if not await self._apply(ticket, tasks, decided):
                continue  # somebody changed the ticket under us: decide again
            if decided.finish:
                return  # a finished ticket needs nothing more
        log.warning("ticket %s still changing after %d plans", ticket_id, MAX_REPLANS)

    async def _apply(self, ticket: TicketState, tasks: dict[str, TaskState], decided: Plan) -> bool:
        await asyncio.gather(
            *(self.skip_task(f"{ticket.id}.{name}", why) for name, why in decided.skip.items())
        )
        added = [*decided.add, *decided.resolve.values()]
        if added and not await self.add_tasks(ticket.id, added):
            return False
        for name, subtasks in decided.fan_out.items():
            if not await self.add_tasks(ticket.id, subtasks):
                return False
            await self.bus.tasks.update(f"{ticket.id}.{name}", fanned_out(subtasks))
        for name, why in decided.fail.items():
            key = f"{ticket.id}.{name}"
            await self.end_task(key, TaskStatus.FAILED, why, EventType.TASK_FAILED)
        for name, fix in decided.resolve.items():
            await self.reset_task(
                f"{ticket.id}.{name}",
                f"runs again on {fix.name}, which resolves its merge conflict",
                after=fix.name,
            )
        if (
            decided.transitions
            or decided.finish
            or decided.request_gate
            or decided.request_delivery
        ) and not (await self._advance(ticket, tasks, decided)):
            return False
        await asyncio.gather(
            *(
                self.queue_task(f"{ticket.id}.{name}", decided.bases.get(name, []), ticket.priority)
                for name in decided.queue
            )
        )
        return True

    async def add_tasks(self, ticket_id: str, added: list[TaskState]) -> bool:
        """Create tasks the planner decided on and list them in the ticket. Their ids are
        deterministic, so after a crash between the two the same tasks are found made."""
        for task in added:
            await self.bus.tasks.create(task.id, task)

        def listed(t: TicketState) -> TicketState | None:
            missing = [task.name for task in added if task.name not in t.tasks]
            if not missing or t.status.terminal:
                return None
            t.tasks.extend(missing)
            t.updated_at = utcnow()
            return t

        if await self.bus.tickets.update(ticket_id, listed) is None:
            return False
        for task in added:
            log.info("ticket %s: added task %s (%s)", ticket_id, task.name, task.origin)
        return True

    async def emit_ticket_changes(self, before: TicketState, after: TicketState) -> None:
        """Announce what changed between two states of a ticket (all sent at once)."""
        events = [
            Event(
                id=f"{after.id}.phase_changed.{len(before.phase_history) + i + 1}",
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
            for i, step in enumerate(after.phase_history[len(before.phase_history) :])
        ]
        if after.status is not before.status:
            kind = {
                TicketStatus.DONE: EventType.TICKET_DONE,
                TicketStatus.FAILED: EventType.TICKET_FAILED,
                TicketStatus.CANCELLED: EventType.TICKET_CANCELLED,
            }.get(after.status)
            if kind is not None:
                events.append(ticket_event(after, kind, self.agent_id, reason=after.reason))
        await self.bus.publish_events(events)
        record_ticket_changes(before, after)
        if after.status.terminal:
            # Only a cache eviction: the keys stay readable from the server.
            self.bus.tickets.forget(after.id)
            self.bus.tasks.forget(after.id)

    async def _advance(
        self, ticket: TicketState, tasks: dict[str, TaskState], decided: Plan
    ) -> bool:
        """Move the ticket through its transitions, ask for a gate, or finish it."""
        expected = (ticket.phase, ticket.status, _gate_marks(ticket), delivery.marks(ticket))
        handed_over = [
            await context.summarise(
                self.model,
                ticket,
                context.gather(ticket, tasks, step.from_),
                self.context_tokens,
            )
            for step in decided.transitions
            if step.from_ is not None
        ]
        head = head_commit(tasks)

        def advance(t: TicketState) -> TicketState | None:
            if (t.phase, t.status, _gate_marks(t), delivery.marks(t)) != expected:
                return None
            for step in decided.transitions:
                t.phase_history.append(step)
                t.phase = step.to
            t.context = merge_context(t.context, handed_over)
            if decided.request_gate is not None:
                gates.mark_pending(t, decided.request_gate, head)
            if decided.request_delivery and head is not None:
                delivery.mark_pending(t, head)
            if decided.finish:
                t.status = decided.finish
                t.reason = decided.reason
                t.commit = head
                t.finished_at = utcnow()
            t.updated_at = utcnow()
            return t

        updated = await self.bus.tickets.update(ticket.id, advance)
        if updated is None:
            return False
        await self.emit_ticket_changes(ticket, updated)
        if decided.request_gate is not None:
            request = gates.build_request(updated, tasks, decided.request_gate)
            await gates.publish_request(self.bus, request, self.agent_id)
        if decided.request_delivery:
            await delivery.publish_request(self.bus, delivery.build_request(updated), self.agent_id)
        return True

    async def hand_over(self, ticket: TicketState, phase: Phase) -> PhaseContext:
        """The context `phase` hands to the phases after it, as things stand now."""
        loaded = await self.load(ticket.id)
        tasks = loaded[1] if loaded is not None else {}
        gathered = context.gather(ticket, tasks, phase)
        return await context.summarise(self.model, ticket, gathered, self.context_tokens)

    async def record_verdict(self, verdict: GateVerdict) -> None:
        """Apply a validator's verdict once: pass, queue a fix, or block the ticket."""
        loaded = await self.load(verdict.ticket_id)
        if loaded is None:
            return
        before, tasks = loaded
        fix = gates.fix_task(before, tasks, verdict)
        if fix is not None:
            await self.bus.tasks.create(fix.id, fix)
        after = await self.bus.tickets.update(
            verdict.ticket_id, lambda t: gates.apply_verdict(t, verdict, fix)
        )
        if after is None:
            return
        self.log_verdict(verdict, fix)
        if fix is not None:
            for task in tasks.values():
                if gates.needs_rerun(task, fix.phase, verdict.phase):
                    await self.reset_task(task.id, "re-run after a gate fix")
        await self.emit_ticket_changes(before, after)
        if after.phase is Phase.BLOCKED:
            await self.bus.publish_event(gates.blocked_event(after, self.agent_id))

    async def record_delivery(self, report: DeliveryReport) -> None:
        """Fold a delivery agent's report into the ticket once (the reconcile after it
        finishes the ticket, or leaves it waiting)."""
        after = await self.bus.tickets.update(
            report.ticket_id, lambda t: delivery.apply_report(t, report)
        )
        if after is not None and after.delivery is not None:
            log.info(
                "ticket %s delivery attempt %d: %s",
                report.ticket_id, report.attempt, after.delivery.status.value,
            )  # fmt: skip

    def log_verdict(self, verdict: GateVerdict, fix: TaskState | None) -> None:
        outcome = "passed" if verdict.passed else f"failed (fix: {fix.name})" if fix else "failed"
        log.info(
            "ticket %s %s gate attempt %d %s",
            verdict.ticket_id,
            verdict.phase.value,
            verdict.attempt,
            outcome,
        )

    async def reset_task(self, key: str, reason: str, *, after: str | None = None) -> None:
        """Send a task back to blocked, as a new generation, so it runs again (`after`
        another task it now depends on as well)."""
        was_running = False

        def reset(t: TaskState) -> TaskState | None:
            nonlocal was_running
            if after is not None:
                if after in t.depends_on:
                    return None  # already done
                t.depends_on = [after, *t.depends_on]
            was_running = t.status is TaskStatus.RUNNING
            t.status = TaskStatus.BLOCKED
            t.generation += 1
            t.attempts = 0
            t.handoff = t.assigned = t.assigned_at = None
            t.error = None
            t.result = None
            t.worker = None
            t.msg_seq = None
            t.delivery = 0
            t.reason = reason
            t.queued_at = t.started_at = t.finished_at = None
            t.updated_at = utcnow()
            return t

        task = await self.bus.tasks.update(key, reset)
        if task is not None and was_running:
            await self.bus.notify(control_cancel_subject(task.ticket_id, task.name))

    async def _ranking(self, key: str) -> tuple[list[Candidate], Candidate | None] | None:
        if self.assigner is None:
            return None
        task = await self.bus.tasks.get_cached(key)
        if task is None:
            return None
        if self.assigner.stale():
            self.assigner.refresh(await self.bus.heartbeats.values())
        return self.assigner.choose(task)

    async def queue_task(
        self, key: str, base: list[str] | None = None, priority: Priority = "normal"
    ) -> None:
        choice = await self._ranking(key)
        chosen = choice[1].agent_id if choice is not None and choice[1] is not None else None

        def to_queued(t: TaskState) -> TaskState | None:
            if t.status is not TaskStatus.BLOCKED:
                return None
            t.status = TaskStatus.QUEUED
            t.priority = priority  # its dispatch's lane
            t.base = list(base or [])
            if choice is not None and t.handoff is None:
                t.assigned = chosen
                t.assigned_at = utcnow() if chosen else None
            t.queued_at = t.updated_at = utcnow()
            return t

        written = await self.bus.tasks.update_versioned(key, to_queued)
        if written is not None:
            task = written.value
            # Stamped with when it became ready, not when the event was built: a worker
            # may start it before this event exists, and schedule-to-start is measured
            # from this time.
            queued = task_event(task, EventType.TASK_QUEUED, self.agent_id, priority=task.priority)
            dispatched = await self.bus.dispatch_async(task, written.revision)
            announced = await self.bus.publish_event_async(
                queued.model_copy(update={"at": task.queued_at})
            )
            assigned = None
            if choice is not None and task.handoff is None:
                event = assigned_event(task, choice[0], chosen, self)
                assigned = await self.bus.publish_event_async(event)
                if chosen is not None and self.assigner is not None:
                    self.assigner.given(task.id, chosen)
            await self.bus.confirm(dispatched)
            await self.bus.confirm(announced)
            if assigned is not None:
                await self.bus.confirm(assigned)

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
        ended = await self.end_tasks([key], status, reason, kind, stop_running=stop_running)
        return ended[0] if ended else None

    async def end_tasks(
        self,
        keys: Iterable[str],
        status: TaskStatus,
        reason: str,
        kind: EventType,
        *,
        stop_running: bool = True,
    ) -> list[TaskState]:
        """End several tasks, writing every state before stopping any running one: a worker
        freed by the stop must find its next dispatch of these already ended, not run it."""
        ended: list[tuple[TaskState, bool]] = []
        for key in keys:
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
            if task is not None:
                ended.append((task, was_running))
        for task, was_running in ended:
            if was_running:
                await self.bus.notify(control_cancel_subject(task.ticket_id, task.name))
        for task, _ in ended:
            await self.bus.publish_event(task_event(task, kind, self.agent_id, reason=reason))
            record_task(task)
        return [task for task, _ in ended]

    async def running_tickets(self) -> list[str]:
        """The running tickets the mirror holds. A ticket another planner finished leaves
        the mirror here, as the ones this planner finishes do, so each sweep costs the
        tickets in flight, not every ticket there ever was."""
        running = []
        for t in await self.bus.tickets.values():
            if t.status.terminal:
                self.bus.tickets.forget(t.id)
                self.bus.tasks.forget(t.id)
            elif t.status is TicketStatus.RUNNING and t.phase is not Phase.DONE:
                running.append(t.id)
        return running


def _gate_marks(ticket: TicketState) -> dict[Phase, tuple[int, GateStatus]]:
    return {phase: (g.attempts, g.status) for phase, g in ticket.gates.items()}


def merge_context(have: list[PhaseContext], new: list[PhaseContext]) -> list[PhaseContext]:
    """A phase that runs again replaces what it handed over before."""
    phases = {c.phase for c in new}
    return [c for c in have if c.phase not in phases] + new


def fanned_out(subtasks: list[TaskState]) -> Callable[[TaskState], TaskState | None]:
    """The change that makes a split task wait for its subtasks, and merge them."""

    def change(task: TaskState) -> TaskState | None:
        if task.fanned_out or task.status is not TaskStatus.BLOCKED:
            return None
        task.origin = f"{SPLIT_ORIGIN}{len(subtasks)}"
        task.depends_on = [*task.depends_on, *(t.name for t in subtasks)]
        task.updated_at = utcnow()
        return task

    return change


def assigned_event(
    task: TaskState, ranked: list[Candidate], chosen: str | None, by: Reconciler
) -> Event:
    """`task.assigned`: the choice, and every candidate's score and its parts."""
    why = None
    if not ranked:
        why = f"no live worker can take it yet (requires {', '.join(task.requires)})"
    elif chosen is None:
        why = "the candidates are about as good: whichever is free first takes it"
    return task_event(
        task, EventType.TASK_ASSIGNED, by.agent_id,
        worker=chosen, reason=why,
        candidates=[{"worker": c.agent_id, "score": c.score, **c.parts} for c in ranked[:10]],
    )  # fmt: skip
