"""Admission: a submission becomes a ticket, or a precise rejection.

The intake stream's consumer creates tickets; a core subscription on each intake subject
answers requests with the same validation (its reply is advisory). The subject a
submission arrived on grants its rights (agents/planner/rights.py).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from agents.errors import InvalidTicket
from agents.llm.client import ModelClient
from agents.planner import audit, rights
from agents.planner.apply import Reconciler
from agents.planner.decompose import decompose
from agents.planner.intake import Intake, assemble, build, derive_ticket_id, same_ticket
from agents.settings import Settings
from bus import Bus, Delivery, Reject, Request
from bus import constants as c
from schemas import ErrorInfo, Event, EventType, Reply
from schemas.audit import AuditOutcome
from schemas.ticket import TicketState


def granted(subject: str) -> frozenset[rights.Right]:
    """The rights a ticket has by the intake subject it arrived on."""
    return rights.ALL if subject == c.TRUSTED_SUBMIT_SUBJECT else rights.NONE


class Admission:
    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        agent_id: str,
        reconciler: Reconciler,
        model: ModelClient | None,
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.agent_id = agent_id
        self.reconciler = reconciler
        self.model = model
        self.log = log
        self._workflow_dirs: list[Path] = [d for d in [settings.workflows_dir] if d is not None]
        self._workflow_dirs.append(settings.data_dir / "workflows")

    def _build(self, data: bytes, subject: str) -> Intake:
        return build(
            data,
            granted=granted(subject),
            max_bytes=self.settings.max_ticket_bytes,
            default_workflow=self.settings.default_workflow,
            workflow_dirs=self._workflow_dirs,
        )

    async def take(self, delivery: Delivery) -> None:
        """A submission from the intake stream: a ticket and its tasks, or a rejection
        (an event, and a dead letter through the `Reject`)."""
        data = delivery.data
        ticket_id = derive_ticket_id(data)
        try:
            intake = self._build(data, delivery.subject)
        except InvalidTicket as exc:
            await self._rejected(ticket_id, exc, len(data), delivery.subject)
            entry = audit.submission(
                delivery.subject,
                delivery.seq,
                ticket_id,
                AuditOutcome.REJECTED,
                f"{exc.category}: {exc.message}",
            )
            await self.bus.publish_audit(entry)
            raise Reject(exc.message, exc.category) from exc

        ticket = intake.ticket
        # The mirror holds every running ticket, so a new id costs no round trip. A finished
        # ticket has left it; a resubmission of one then finds it at `create` below.
        existing = await self.bus.tickets.get_cached(ticket.id)
        if existing is None:
            intake = await self._plan_with_model(intake, granted(delivery.subject))
            ticket = intake.ticket
        if existing is not None:
            await self._check_duplicate(existing, ticket, len(data))
            self.log.info("ticket %s already exists; duplicate submission ignored", ticket.id)
        else:
            # Tasks first: a ticket that exists always has all its tasks.
            await asyncio.gather(*(self.bus.tasks.create(task.id, task) for task in intake.tasks))
            if await self.bus.tickets.create(ticket.id, ticket):
                self.log.info("ticket %s created with %d tasks", ticket.id, len(intake.tasks))
            elif (existing := await self.bus.tickets.value(ticket.id)) is not None:
                await self._check_duplicate(existing, ticket, len(data))
        stored = await self.bus.tickets.value(ticket.id)
        if stored is not None:
            await self.bus.publish_event(
                Event(
                    id=f"{ticket.id}.created",
                    type=EventType.TICKET_CREATED,
                    ticket_id=ticket.id,
                    agent=self.agent_id,
                    at=stored.created_at,
                    data={
                        "title": stored.title,
                        "tasks": stored.tasks,
                        "workflow": stored.workflow,
                        "priority": stored.priority,
                    },
                )
            )
        # Stored before the submission is acked, so every admitted one is on record.
        await self.bus.publish_audit(
            audit.submission(delivery.subject, delivery.seq, ticket.id, AuditOutcome.OK)
        )
        await self.reconciler.reconcile(ticket.id)

    async def _check_duplicate(self, existing: TicketState, ticket: TicketState, size: int) -> None:
        if not same_ticket(existing, ticket):
            reason = InvalidTicket(
                f"ticket id {ticket.id} is already used by a different ticket", "duplicate_id"
            )
            await self._rejected(ticket.id, reason, size)
            raise Reject(reason.message, reason.category)

    async def _plan_with_model(self, intake: Intake, rights_: frozenset[rights.Right]) -> Intake:
        """Let the model plan the tasks when the workflow asks for it; else the template.
        A plain ticket's description steers the model, so its plan may not add commands."""
        workflow = intake.workflow
        if workflow is None or not workflow.decompose or self.model is None:
            return intake
        ticket_id = intake.ticket.id
        specs = await decompose(self.model, ticket_id, intake.submission)
        if specs is not None and rights.Right.SHELL_COMMANDS not in rights_:
            if rights.plan_needs(specs):
                self.log.warning("generated plan for %s has shell commands; not used", ticket_id)
                specs = None
        if specs is None:
            self.log.info("ticket %s keeps the %s template's tasks", ticket_id, workflow.name)
            return intake
        try:
            return assemble(ticket_id, intake.submission, specs, workflow)
        except InvalidTicket as exc:
            self.log.warning("generated plan for %s rejected: %s", ticket_id, exc.message)
            return intake

    async def _rejected(
        self, ticket_id: str, exc: InvalidTicket, size: int, subject: str | None = None
    ) -> None:
        self.log.warning("rejected submission %s: %s", ticket_id, exc.message)
        data: dict[str, Any] = {
            "error": {"category": exc.category, "message": exc.message},
            "bytes": size,
        }
        if subject is not None:
            data["subject"] = subject
        await self.bus.publish_event(
            Event(
                id=f"{ticket_id}.rejected.{exc.category}",
                type=EventType.TICKET_REJECTED,
                ticket_id=ticket_id,
                agent=self.agent_id,
                data=data,
            )
        )

    async def answer(self, request: Request) -> bytes | None:
        """Reply to a request on the intake subject. The stream consumer does the work."""
        if not request.wants_reply:
            return None  # a plain publish: the intake stream has it, nobody waits
        ticket_id = derive_ticket_id(request.data)
        try:
            intake = self._build(request.data, request.subject)
            existing = await self.bus.tickets.value(intake.ticket.id)
            if existing is not None and not same_ticket(existing, intake.ticket):
                raise InvalidTicket(
                    f"ticket id {intake.ticket.id} is already used by a different ticket",
                    "duplicate_id",
                )
            reply = Reply(ok=True, ticket_id=intake.ticket.id, message="accepted")
        except InvalidTicket as exc:
            reply = Reply(
                ok=False,
                ticket_id=ticket_id,
                error=ErrorInfo(category=exc.category, message=exc.message),
            )
        return reply.to_json()
