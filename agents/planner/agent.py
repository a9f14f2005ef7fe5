"""The planner: turns intake messages into tickets and drives every ticket forward.

It consumes three inputs, all idempotently:
- the intake stream (new tickets), with a core queue subscription answering requests;
- task outcome events (a task succeeded, failed or was cancelled);
- operator commands (request/reply).
A periodic sweep reconciles every running ticket, so a lost event delays a ticket but
never strands it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.msg import Msg
from pydantic import BaseModel, ValidationError

from agents.base import Agent
from agents.errors import CommandError, InvalidTicket
from agents.llm.client import ModelClient, ModelConfig
from agents.planner.apply import Reconciler
from agents.planner.commands import Commands
from agents.planner.decompose import decompose
from agents.planner.intake import Intake, assemble, build, derive_ticket_id, same_ticket
from agents.settings import Settings
from bus import Bus, Reject, settle
from bus import constants as c
from bus.batch import BatchPuller
from schemas import (
    CancelTask,
    CancelTicket,
    ErrorInfo,
    Event,
    EventType,
    MoveTicket,
    Reply,
)
from schemas.gate import GateVerdict
from schemas.task import task_key
from schemas.ticket import TicketState


class Planner(Agent):
    role = "planner"

    def __init__(self, bus: Bus, settings: Settings, agent_id: str | None = None) -> None:
        super().__init__(bus, settings, agent_id)
        config = ModelConfig.from_settings(settings)
        self.model = ModelClient(config) if config is not None else None
        self.reconciler = Reconciler(
            bus,
            self.id,
            workspaces=settings.workspaces_dir,
            model=self.model,
            context_tokens=settings.context_tokens,
        )
        self.commands = Commands(bus, self.reconciler)
        self._workflow_dirs = [d for d in [settings.workflows_dir] if d is not None]
        self._workflow_dirs.append(settings.data_dir / "workflows")
        self._dead_letter_intake = bus.dead_letterer("intake")
        self._dead_letter_events = bus.dead_letterer("events")

    async def main(self) -> None:
        # Queue groups: with several planners, exactly one answers each request.
        subs = [
            await self.bus.serve(c.SUBMIT_SUBJECT, self._answer_intake, queue=c.PLANNER_QUEUE),
            *[
                await self.bus.serve(subject, self._command(model), queue=c.PLANNER_QUEUE)
                for subject, model in (
                    (c.CMD_TICKET_CANCEL, CancelTicket),
                    (c.CMD_TASK_CANCEL, CancelTask),
                    (c.CMD_TICKET_MOVE, MoveTicket),
                )
            ],
        ]
        await self.bus.mirror_state()
        await self.sweep(redispatch=True)
        self.ready.set()
        loops = [
            asyncio.create_task(
                self._consume(
                    c.INTAKE_STREAM,
                    c.INTAKE_CONSUMER,
                    lambda msg: derive_ticket_id(msg.data),
                    self._settle_submissions,
                )
            ),
            asyncio.create_task(self._consume_events()),
            asyncio.create_task(self._sweep_loop()),
        ]
        try:
            await self.stopping.wait()
        finally:
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            # Loops finish the message in hand before they notice the stop.
            _, pending = await asyncio.wait(loops, timeout=self.settings.shutdown_grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)

    async def _consume(
        self,
        stream: str,
        durable: str,
        key: Callable[[Msg], str],
        handle: Callable[[list[Msg]], Awaitable[None]],
    ) -> None:
        """A batch at a time, grouped by `key` (the ticket): groups are handled
        concurrently, each group's messages in order by `handle`."""
        puller = await BatchPuller(self.bus.nc, stream, durable).start()
        try:
            while not self.stopping.is_set():
                try:
                    msgs = await puller.take(
                        self.settings.planner_batch, self.settings.fetch_poll_s
                    )
                except Exception:
                    self.log.warning("fetch from %s failed", durable, exc_info=True)
                    await self.wait_stopping(1.0)
                    continue
                groups: dict[str, list[Msg]] = {}
                for msg in msgs:
                    groups.setdefault(key(msg), []).append(msg)
                await asyncio.gather(*(handle(group) for group in groups.values()))
        finally:
            await puller.stop()

    async def _settle_submissions(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            await settle(msg, self._intake, self._dead_letter_intake)

    # Intake

    def _build(self, data: bytes) -> Intake:
        return build(
            data,
            max_bytes=self.settings.max_ticket_bytes,
            default_workflow=self.settings.default_workflow,
            workflow_dirs=self._workflow_dirs,
        )

    async def _intake(self, msg: Msg) -> None:
        ticket_id = derive_ticket_id(msg.data)
        try:
            intake = self._build(msg.data)
        except InvalidTicket as exc:
            await self._rejected(ticket_id, exc.category, exc.message, len(msg.data))
            raise Reject(exc.message, exc.category) from exc

        ticket = intake.ticket
        # The mirror holds every running ticket, so a new id costs no round trip. A finished
        # ticket has left it; a resubmission of one then finds it at `create` below.
        existing = await self.bus.tickets.get_cached(ticket.id)
        if existing is None:
            intake = await self._plan_with_model(intake)
            ticket = intake.ticket
        if existing is not None:
            await self._check_duplicate(existing, ticket, len(msg.data))
            self.log.info("ticket %s already exists; duplicate submission ignored", ticket.id)
        else:
            # Tasks first: a ticket that exists always has all its tasks.
            await asyncio.gather(*(self.bus.tasks.create(task.id, task) for task in intake.tasks))
            if await self.bus.tickets.create(ticket.id, ticket):
                self.log.info("ticket %s created with %d tasks", ticket.id, len(intake.tasks))
            elif (existing := await self.bus.tickets.value(ticket.id)) is not None:
                await self._check_duplicate(existing, ticket, len(msg.data))
        stored = await self.bus.tickets.value(ticket.id)
        if stored is not None:
            await self.bus.publish_event(
                Event(
                    id=f"{ticket.id}.created",
                    type=EventType.TICKET_CREATED,
                    ticket_id=ticket.id,
                    agent=self.id,
                    at=stored.created_at,
                    data={
                        "title": stored.title,
                        "tasks": stored.tasks,
                        "workflow": stored.workflow,
                        "priority": stored.priority,
                    },
                )
            )
        await self.reconciler.reconcile(ticket.id)

    async def _check_duplicate(self, existing: TicketState, ticket: TicketState, size: int) -> None:
        if not same_ticket(existing, ticket):
            reason = f"ticket id {ticket.id} is already used by a different ticket"
            await self._rejected(ticket.id, "duplicate_id", reason, size)
            raise Reject(reason, "duplicate_id")

    async def _plan_with_model(self, intake: Intake) -> Intake:
        """Let the model plan the tasks when the workflow asks for it; else the template."""
        workflow = intake.workflow
        if workflow is None or not workflow.decompose or self.model is None:
            return intake
        ticket_id = intake.ticket.id
        specs = await decompose(self.model, ticket_id, intake.submission)
        if specs is None:
            self.log.info("ticket %s keeps the %s template's tasks", ticket_id, workflow.name)
            return intake
        try:
            return assemble(ticket_id, intake.submission, specs, workflow)
        except InvalidTicket as exc:
            self.log.warning("generated plan for %s rejected: %s", ticket_id, exc.message)
            return intake

    async def _rejected(self, ticket_id: str, category: str, message: str, size: int) -> None:
        self.log.warning("rejected submission %s: %s", ticket_id, message)
        await self.bus.publish_event(
            Event(
                id=f"{ticket_id}.rejected.{category}",
                type=EventType.TICKET_REJECTED,
                ticket_id=ticket_id,
                agent=self.id,
                data={"error": {"category": category, "message": message}, "bytes": size},
            )
        )

    async def _answer_intake(self, msg: Msg) -> None:
        """Reply to a request on the intake subject. The stream consumer does the work."""
        if not msg.reply:
            return
        ticket_id = derive_ticket_id(msg.data)
        try:
            intake = self._build(msg.data)
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
        await msg.respond(reply.to_json())

    # Task outcomes

    async def _consume_events(self) -> None:
        """Outcome events, a batch at a time, with one reconcile per ticket per batch.

        Reconciling reads the whole ticket, so under load ten outcomes of one ticket need
        one pass, not ten. Only the ticket's last message carries the reconcile; the others
        are acked once parsed. If that reconcile fails, its message is redelivered, and
        since a reconcile works from state, not from the event, nothing is lost.
        Different tickets are reconciled concurrently, so their round trips overlap.
        """
        await self._consume(
            c.EVENTS_STREAM, c.PLANNER_EVENTS_CONSUMER, self._ticket_of, self._settle_outcomes
        )

    async def _settle_outcomes(self, msgs: list[Msg]) -> None:
        """One ticket's outcomes from a batch, in order; the last one reconciles."""
        for msg in msgs[:-1]:
            await settle(msg, self._on_event_seen, self._dead_letter_events)
        await settle(msgs[-1], self._on_event, self._dead_letter_events)

    @staticmethod
    def _ticket_of(msg: Msg) -> str:
        # omoi.events.<ticket>.<type...>
        parts = msg.subject.split(".")
        return parts[2] if len(parts) > 2 else ""

    async def _on_event_seen(self, msg: Msg) -> None:
        """An outcome whose ticket a later message in the batch reconciles."""
        event = self._parse_event(msg)
        await self._caught_up(event)
        if event.type in (EventType.GATE_PASSED, EventType.GATE_FAILED):
            await self.reconciler.record_verdict(GateVerdict.model_validate(event.data))

    def _parse_event(self, msg: Msg) -> Event:
        try:
            event = Event.model_validate_json(msg.data)
            if event.type in (EventType.GATE_PASSED, EventType.GATE_FAILED):
                GateVerdict.model_validate(event.data)
        except ValidationError as exc:
            raise Reject(f"not an event: {exc}", "invalid_event") from exc
        return event

    async def _caught_up(self, event: Event) -> None:
        """Wait until the state mirror holds the task state `event` announces."""
        revision = event.data.get("revision")
        if event.task and isinstance(revision, int):
            await self.bus.tasks.caught_up(task_key(event.ticket_id, event.task), revision)

    async def _on_event(self, msg: Msg) -> None:
        event = self._parse_event(msg)
        await self._caught_up(event)
        if event.type in (EventType.GATE_PASSED, EventType.GATE_FAILED):
            await self.reconciler.record_verdict(GateVerdict.model_validate(event.data))
        await self.reconciler.reconcile(event.ticket_id)

    # Commands

    def _command[M: BaseModel](self, model: type[M]) -> Callable[[Msg], Awaitable[None]]:
        handlers: dict[type[BaseModel], Callable[[Any], Awaitable[Any]]] = {
            CancelTicket: self.commands.cancel_ticket,
            CancelTask: self.commands.cancel_task,
            MoveTicket: self.commands.move_ticket,
        }
        run = handlers[model]

        async def handle(msg: Msg) -> None:
            try:
                cmd = model.model_validate_json(msg.data)
                result = await run(cmd)
                reply = Reply(
                    ok=True,
                    ticket_id=getattr(result, "ticket_id", None) or getattr(result, "id", None),
                    task_id=getattr(cmd, "task_id", None),
                    message=f"{type(cmd).__name__} done",
                )
            except ValidationError as exc:
                reply = Reply(
                    ok=False, error=ErrorInfo(category="invalid_command", message=str(exc))
                )
            except CommandError as exc:
                reply = Reply(ok=False, error=ErrorInfo(category=exc.category, message=exc.message))
            except Exception as exc:
                self.log.exception("command on %s failed", msg.subject)
                reply = Reply(ok=False, error=ErrorInfo(category="internal", message=repr(exc)))
            if msg.reply:
                await msg.respond(reply.to_json())

        return handle

    # Sweep

    async def sweep(self, *, redispatch: bool = False) -> None:
        for ticket_id in await self.reconciler.running_tickets():
            try:
                await self.reconciler.reconcile(ticket_id, redispatch=redispatch)
            except Exception:
                self.log.exception("reconciling %s failed", ticket_id)

    async def _sweep_loop(self) -> None:
        while not await self.wait_stopping(self.settings.reconcile_interval_s):
            await self.sweep()
