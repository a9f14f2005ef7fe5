"""The planner: turns intake messages into tickets and drives every ticket forward.

It consumes three inputs, all idempotently:
- the intake stream (new tickets on both intake subjects, the plain one and the trusted
  one whose rights it grants: agents/planner/rights.py), with a core queue subscription
  on each answering requests;
- task outcome events (a task succeeded, failed or was cancelled);
- operator commands (request/reply).
A periodic sweep reconciles every running ticket, so a lost event delays a ticket but
never strands it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from agents.base import Agent
from agents.errors import CommandError
from agents.llm.client import ModelClient, ModelConfig
from agents.planner import audit, handoffs
from agents.planner.admission import Admission
from agents.planner.apply import Reconciler
from agents.planner.assign import Assigner
from agents.planner.commands import Commands
from agents.planner.discoveries import Desk, Limits
from agents.planner.intake import derive_ticket_id
from agents.planner.restore import Restorer
from agents.settings import Settings
from bus import Bus, Consumer, Delivery, Reject, Request, Source
from bus import constants as c
from bus.log_context import logging_context
from bus.ownership import Ownership
from bus.partitioned import PartitionedConsumer
from bus.trace_context import bind_ticket, new_span_id
from schemas import (
    CancelTask,
    CancelTicket,
    DeliverTicket,
    ErrorInfo,
    Event,
    EventType,
    MoveTicket,
    PauseTicket,
    PullRequestUpdate,
    Reply,
    ResumeTicket,
    SetPriority,
    TaskStatus,
)
from schemas.audit import AuditOutcome
from schemas.delivery import DeliveryReport
from schemas.discovery import DiscoveryDecision, DiscoveryReport
from schemas.gate import GateVerdict
from schemas.partition import PartitionLease
from schemas.registry import AgentStatus
from schemas.task import task_key


class Planner(Agent):
    role = "planner"

    def __init__(self, bus: Bus, settings: Settings, agent_id: str | None = None) -> None:
        super().__init__(bus, settings, agent_id)
        config = ModelConfig.from_settings(settings)
        self.model = ModelClient(config) if config is not None else None
        self.assigner = Assigner()
        self.reconciler = Reconciler(
            bus,
            self.id,
            model=self.model,
            context_tokens=settings.context_tokens,
            assigner=self.assigner,
        )
        self.desk = Desk(
            bus,
            self.id,
            Limits(settings.discovery_max_depth, settings.discovery_max,
                   settings.discovery_approval_usd),
        )  # fmt: skip
        self.commands = Commands(bus, self.reconciler, self.desk)
        self.restorer = Restorer(bus, self.id, lost_after_s=settings.lost_message_after_s)
        self.admission = Admission(bus, settings, self.id, self.reconciler, self.model, self.log)
        self.partitions: PartitionedConsumer | None = None  # bound in main()
        self._sweep_now = asyncio.Event()

    async def main(self) -> None:
        # Queue groups: with several planners, exactly one answers each request.
        subs = [
            *[
                await self.bus.serve(subject, self.admission.answer, queue=c.PLANNER_QUEUE)
                for subject in c.INTAKE_SUBJECTS
            ],
            *[
                await self.bus.serve(subject, self._command(model), queue=c.PLANNER_QUEUE)
                for subject, model in (
                    (c.CMD_TICKET_CANCEL, CancelTicket),
                    (c.CMD_TASK_CANCEL, CancelTask),
                    (c.CMD_TICKET_MOVE, MoveTicket),
                    (c.CMD_TICKET_PAUSE, PauseTicket),
                    (c.CMD_TICKET_RESUME, ResumeTicket),
                    (c.CMD_TICKET_PRIORITY, SetPriority),
                    (c.CMD_TICKET_DELIVER, DeliverTicket),
                    (c.CMD_TICKET_PULL_REQUEST, PullRequestUpdate),
                    (c.CMD_TICKET_DISCOVERY, DiscoveryDecision),
                )
            ],
        ]
        await self.bus.mirror_state()
        leases = await self.bus.bucket(c.PARTITIONS_BUCKET, PartitionLease)
        ownership = Ownership(leases, c.PLANNER_GROUP, self.id, range(c.PLANNER_PARTITIONS))
        # Outcome events, a batch at a time, from the partitions this planner owns, with one
        # reconcile per ticket per batch: reconciling reads the whole ticket, so ten outcomes
        # of one ticket need one pass, not ten. Different tickets are reconciled at once.
        self.partitions = PartitionedConsumer(
            ownership,
            lambda p: self._consumer(
                c.PLANNER_STREAM, c.planner_events_consumer(p), self._on_event, _event_key
            ),
            renew_s=self.settings.planner_lease_s / 3,
            # Taking a partition over, sweep its tickets: their last outcomes may have
            # been in the hands of a planner that died.
            on_gained=lambda _: self._sweep_now.set(),
            logger=self.log,
        )
        try:
            await self.consume(
                # Intake is shared: any planner admits a ticket and starts it.
                self._consumer(
                    c.INTAKE_STREAM, c.INTAKE_CONSUMER, self.admission.take, _intake_key
                ),
                self.partitions,
                also=[self._sweep_loop()],
            )
        finally:
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    def _consumer(
        self,
        stream: str,
        durable: str,
        handler: Callable[[Delivery], Awaitable[None]],
        key: Callable[[Delivery], str],
    ) -> Consumer:
        """Batches grouped by ticket: each ticket's messages in order, tickets at once."""
        return Consumer(
            self.bus,
            [Source(stream, durable)],
            handler,
            dead_letter=self.bus.dead_letterer("intake" if stream == c.INTAKE_STREAM else "events"),
            name=durable,
            batch=self.settings.planner_batch,
            group=key,
            poll_s=self.settings.fetch_poll_s,
            grace_s=self.settings.shutdown_grace_s,
            keep_alive_s=max(0.5, self.settings.ack_wait_s / 3),
            logger=self.log,
        )

    def status(self) -> AgentStatus:
        held = self.partitions.held if self.partitions is not None else frozenset()
        return super().status().model_copy(update={"partitions": sorted(held)})

    # Task outcomes

    def _parse_event(self, delivery: Delivery) -> Event:
        try:
            event = Event.model_validate_json(delivery.data)
            if event.type in (EventType.GATE_PASSED, EventType.GATE_FAILED):
                GateVerdict.model_validate(event.data)
            if event.type in DELIVERY_REPORTS:
                DeliveryReport.model_validate(event.data)
            if event.type is EventType.DISCOVERY_REPORTED:
                DiscoveryReport.model_validate(event.data)
        except ValidationError as exc:
            raise Reject(f"not an event: {exc}", "invalid_event") from exc
        return event

    async def _caught_up(self, event: Event) -> None:
        """Wait until the state mirror holds the task state `event` announces."""
        revision = event.data.get("revision")
        if event.task and isinstance(revision, int):
            await self.bus.tasks.caught_up(task_key(event.ticket_id, event.task), revision)

    async def _on_event(self, delivery: Delivery) -> None:
        """An outcome: apply a verdict, then reconcile the ticket, unless a later message
        of the same ticket in this batch will (reconciling works from state, not from the
        event, so the last one covers them all; if it fails it is redelivered)."""
        event = self._parse_event(delivery)
        bind_ticket(event.ticket_id, event.task)
        self.assigner.observe(event)
        if event.type is EventType.TASK_RETRYING:
            return  # history for assignment only: the task is queued again as it was
        await self._caught_up(event)
        if event.type in (EventType.GATE_PASSED, EventType.GATE_FAILED):
            await self.reconciler.record_verdict(GateVerdict.model_validate(event.data))
        if event.type in DELIVERY_REPORTS:
            await self.reconciler.record_delivery(DeliveryReport.model_validate(event.data))
        if event.type is EventType.DISCOVERY_REPORTED:
            if (loaded := await self.reconciler.load(event.ticket_id)) is not None:
                report = DiscoveryReport.model_validate(event.data)
                await self.desk.record(*loaded, report)
        if not delivery.more_in_group:
            await self.reconciler.reconcile(event.ticket_id)

    # Commands

    def _command[M: BaseModel](self, model: type[M]) -> Callable[[Request], Awaitable[bytes]]:
        handlers: dict[type[BaseModel], Callable[[Any], Awaitable[Any]]] = {
            CancelTicket: self.commands.cancel_ticket,
            CancelTask: self.commands.cancel_task,
            MoveTicket: self.commands.move_ticket,
            PauseTicket: self.commands.pause_ticket,
            ResumeTicket: self.commands.resume_ticket,
            SetPriority: self.commands.set_priority,
            DeliverTicket: self.commands.deliver_ticket,
            PullRequestUpdate: self.commands.pull_request,
            DiscoveryDecision: self.commands.decide_discovery,
        }
        run = handlers[model]

        async def handle(request: Request) -> bytes:
            try:
                cmd = model.model_validate_json(request.data)
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
                self.log.exception("command on %s failed", request.subject)
                reply = Reply(ok=False, error=ErrorInfo(category="internal", message=repr(exc)))
            await self._audit_command(request, reply)
            return reply.to_json()

        return handle

    async def _audit_command(self, request: Request, reply: Reply) -> None:
        target = reply.task_id or reply.ticket_id or _named_target(request.data)
        if reply.ok:
            outcome, detail = AuditOutcome.OK, reply.message
        elif reply.error is not None and reply.error.category == "internal":
            outcome, detail = AuditOutcome.ERROR, reply.error.message
        else:
            error = reply.error
            outcome = AuditOutcome.REJECTED
            detail = f"{error.category}: {error.message}" if error else ""
        try:
            await self.bus.publish_audit(audit.command(request.subject, target, outcome, detail))
        except Exception as exc:  # noqa: BLE001 - the command is done; its record is not
            self.log.warning("audit of %s on %s not stored: %r", target, request.subject, exc)

    # Sweep

    async def owned_tickets(self) -> list[str]:
        """The running tickets of the partitions this planner owns: those it sweeps."""
        held = self.partitions.held if self.partitions is not None else frozenset()
        return [
            t for t in await self.reconciler.running_tickets() if c.planner_partition(t) in held
        ]

    async def sweep(self) -> None:
        """Reconcile every running ticket it owns, and give work that lost its message a
        new one."""
        owned = await self.owned_tickets()
        for ticket_id in owned:
            # Each ticket's reconciling is a span of its own, in the ticket's trace.
            with logging_context(span_id=new_span_id()):
                bind_ticket(ticket_id)
                try:
                    await self.reconciler.reconcile(ticket_id)
                except Exception:
                    self.log.exception("reconciling %s failed", ticket_id)
        try:
            await self.restorer.restore(owned)
        except Exception:
            self.log.exception("restoring lost messages failed")
        try:
            await self.expire_handoffs(owned)
        except Exception:
            self.log.exception("checking handed-off tasks failed")

    async def expire_handoffs(self, tickets: list[str]) -> None:
        serving = handoffs.served(await self.bus.heartbeats.values())
        for ticket_id in tickets:
            loaded = await self.reconciler.load(ticket_id)
            if loaded is None:
                continue
            for task in loaded[1].values():
                why = handoffs.unserved(task, serving, self.settings.handoff_timeout_s)
                if why is not None:
                    self.log.warning("%s: %s", task.id, why)
                    await self.reconciler.end_task(
                        task.id, TaskStatus.FAILED, why, EventType.TASK_FAILED
                    )
                    await self.reconciler.reconcile(ticket_id)

    async def _sweep_loop(self) -> None:
        while not self.stopping.is_set():
            waits = [asyncio.ensure_future(e.wait()) for e in (self.stopping, self._sweep_now)]
            await asyncio.wait(
                waits, timeout=self.settings.reconcile_interval_s, return_when="FIRST_COMPLETED"
            )
            for wait in waits:
                wait.cancel()
            if self.stopping.is_set():
                return
            self._sweep_now.clear()
            await self.sweep()


DELIVERY_REPORTS = (EventType.DELIVERY_SUCCEEDED, EventType.DELIVERY_FAILED)


def _intake_key(delivery: Delivery) -> str:
    return derive_ticket_id(delivery.data)


def _event_key(delivery: Delivery) -> str:
    # omoi.planner.<partition>.<ticket>.<type...>
    parts = delivery.subject.split(".")
    return parts[3] if len(parts) > 3 else ""


def _named_target(data: bytes) -> str:
    """What a command that failed named, for its audit entry (it may not even parse)."""
    try:
        body = json.loads(data)
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    return str(body.get("task_id") or body.get("ticket_id") or "")[:200]
