"""The guardian: reads the monitor's findings, task failures and held discoveries off the
events stream, decides (agents/guardian/policy.py), and applies what is within its
authority or records a proposal. Operators approve proposals and undo interventions through it
(`omoi guardian approve|undo`, request/reply on `omoi.guardian.approve|undo`).

Every step is an `Intervention` in `omoi_interventions`, written compare-and-set, told
as a `guardian.<status>` event and kept as an audit entry with its reason and evidence.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict

from pydantic import ValidationError

from agents.base import Agent
from agents.errors import InterventionError
from agents.guardian.effects import Effects
from agents.guardian.policy import (
    CrashLoop,
    Decision,
    Fleet,
    GuardianRules,
    Step,
    intervention_id,
    on_anomaly,
    on_crash_loop,
    on_failure,
    on_held_discovery,
    on_stuck,
    steering,
    stuck_on,
    stuck_trigger,
)
from agents.llm.client import ModelClient, ModelError
from agents.settings import Settings
from bus import Bucket, Bus, Consumer, Delivery, Reject, Request, Source
from bus import constants as c
from bus.trace_context import bind_ticket
from schemas import AGENTS_TOKEN, Event, EventType, utcnow
from schemas.anomaly import Anomaly
from schemas.audit import AuditAction, AuditEntry, AuditOutcome, clip
from schemas.discovery import DiscoveryState, DiscoveryStatus
from schemas.guardian import (
    Intervention,
    InterventionKind,
    InterventionReply,
    InterventionRequest,
    InterventionStatus,
    Quarantine,
)
from schemas.task import task_key

_EVENTS = {
    InterventionStatus.PROPOSED: EventType.GUARDIAN_PROPOSED,
    InterventionStatus.APPLIED: EventType.GUARDIAN_APPLIED,
    InterventionStatus.UNDONE: EventType.GUARDIAN_UNDONE,
    InterventionStatus.FAILED: EventType.GUARDIAN_FAILED,
}


# Running attempts whose progress it keeps (the oldest are forgotten first).
TRACKED_ATTEMPTS = 512
REVIEW_MARKER = "omoi:steer"
REVIEW_SYSTEM = (
    "You supervise coding agents. One seems stuck: it keeps running the same command. "
    "Reply with one short message to the agent that helps it get unstuck, or with just OK "
    "if it is making progress after all."
)


def guardian_rules(settings: Settings) -> GuardianRules:
    return GuardianRules(
        poison_workers=settings.guardian_poison_workers,
        stuck_steps=settings.guardian_stuck_steps,
        autonomous=frozenset(settings.guardian_autonomous),
        discovery_usd=settings.guardian_discovery_usd,
    )


class Guardian(Agent):
    role = "guardian"

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        agent_id: str | None = None,
        rules: GuardianRules | None = None,
        model: ModelClient | None = None,
    ) -> None:
        super().__init__(bus, settings, agent_id)
        self.rules = rules or guardian_rules(settings)
        # None: the rules' own advice steers a stuck agent; else the model words it.
        self.model = model
        self._steps: OrderedDict[str, list[Step]] = OrderedDict()

    async def main(self) -> None:
        self.book = await self.bus.bucket(c.INTERVENTIONS_BUCKET, Intervention)
        quarantine: Bucket[Quarantine] = await self.bus.bucket(c.QUARANTINE_BUCKET, Quarantine)
        self.effects = Effects(self.bus, quarantine, self.id)
        subs = [
            await self.bus.serve(c.GUARDIAN_APPROVE, self._approve),
            await self.bus.serve(c.GUARDIAN_UNDO, self._undo),
        ]
        consumer = Consumer(
            self.bus,
            [Source(c.EVENTS_STREAM, c.GUARDIAN_CONSUMER)],
            self._on_event,
            dead_letter=self.bus.dead_letterer("events"),
            name=c.GUARDIAN_CONSUMER,
            poll_s=self.settings.fetch_poll_s,
            grace_s=self.settings.shutdown_grace_s,
            logger=self.log,
        )
        try:
            await self.consume(consumer)
        finally:
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    # Findings

    async def _on_event(self, delivery: Delivery) -> None:
        try:
            event = Event.model_validate_json(delivery.data)
            decisions = await self.decide(event)
        except (ValidationError, KeyError, TypeError, ValueError) as exc:
            raise Reject(f"not a finding the guardian reads: {exc!r}", "invalid_event") from exc
        for decision in decisions:
            await self._carry_out(decision)

    async def decide(self, event: Event) -> list[Decision]:
        if event.type is EventType.ANOMALY_DETECTED:
            anomaly = Anomaly.model_validate(event.data)
            return on_anomaly(event.id, anomaly, await self._fleet(), self.rules, self.id)
        if event.type is EventType.AGENT_CRASH_LOOPING:
            loop = CrashLoop(
                host=str(event.data["host"]),
                child=str(event.data["child"]),
                agent_id=event.agent,
                role=event.data.get("role"),
                restarts=int(event.data.get("restarts", 0)),
                window_s=float(event.data.get("window_s", 0.0)),
                last_exit=event.data.get("last_exit"),
            )
            return on_crash_loop(event.id, loop, await self._fleet(), self.rules, self.id)
        if event.type is EventType.TASK_PROGRESS and event.task and event.agent:
            return await self._progressed(event, event.task, event.agent)
        if event.type is EventType.DISCOVERY_HELD:
            return await self._held(event)
        if event.type in (EventType.TASK_RETRYING, EventType.TASK_FAILED) and event.task:
            bind_ticket(event.ticket_id, event.task)
            task = await self.bus.tasks.value(task_key(event.ticket_id, event.task))
            return on_failure(task, self.rules, self.id) if task is not None else []
        return []

    async def _held(self, event: Event) -> list[Decision]:
        """A held discovery, as the ticket keeps it now (an operator may have decided it)."""
        bind_ticket(event.ticket_id, event.task)
        reported = DiscoveryState.model_validate(event.data)
        ticket = await self.bus.tickets.value(event.ticket_id)
        held = (
            next((d for d in ticket.discoveries if d.id == reported.id), None) if ticket else None
        )
        if held is None or held.status is not DiscoveryStatus.HELD:
            return []
        return on_held_discovery(event.id, held, self.rules, self.id)

    async def _progressed(self, event: Event, task: str, worker: str) -> list[Decision]:
        attempt = int(event.data.get("attempt", 0))
        key = f"{task_key(event.ticket_id, task)}#{attempt}"
        files = tuple(str(f) for f in event.data.get("files") or ())
        step = Step(int(event.data.get("tool_calls", 0)), event.data.get("last_command"), files)
        steps = self._steps.setdefault(key, [])
        self._steps.move_to_end(key)
        steps.append(step)
        del steps[: -self.rules.stuck_steps]
        while len(self._steps) > TRACKED_ATTEMPTS:
            self._steps.popitem(last=False)
        command = stuck_on(steps, self.rules)
        if command is None:
            return []
        bind_ticket(event.ticket_id, task)
        task_id = task_key(event.ticket_id, task)
        said = intervention_id(
            InterventionKind.STEER_AGENT, task_id, stuck_trigger(task_id, attempt, command)
        )
        if await self.book.value(said) is not None:
            return []  # told already: a review per report would cost a model call each
        message = await self._advice(task_id, command, steps)
        if message is None:
            return []
        decided = on_stuck(task_id, attempt, worker, command, steps, message, self.rules,
                           self.id)  # fmt: skip
        return [decided]

    async def _advice(self, task_id: str, command: str, steps: list[Step]) -> str | None:
        """The model's review of the trajectory when there is a model (None: it says the
        agent is fine), else the rules' advice."""
        if self.model is None:
            return steering(command, steps)
        trajectory = "\n".join(
            f"- after {s.tool_calls} tool calls: last command `{s.last_command}`, "
            f"files changed: {', '.join(s.files) or 'none'}"
            for s in steps
        )
        prompt = f"{REVIEW_MARKER}\nTask {task_id}. Its latest progress reports:\n{trajectory}"
        try:
            said = (await self.model.complete(REVIEW_SYSTEM, prompt, max_tokens=300)).text
        except ModelError as exc:
            self.log.warning("no model review of %s (%s); the rules' advice instead", task_id, exc)
            return steering(command, steps)
        said = said.strip()
        return None if not said or said.upper().rstrip(".!") == "OK" else said[:2000]

    async def _fleet(self) -> Fleet:
        beats = await self.bus.heartbeats.values()
        return Fleet({b.agent_id: b for b in beats}, utcnow())

    async def _carry_out(self, decision: Decision) -> None:
        iv = decision.intervention
        if await self.book.create(iv.id, iv):
            if not (decision.apply and iv.autonomous):
                await self._tell(iv, AuditAction.INTERVENTION, f"nats:{self.role}")
        else:
            # Redelivered: carry on from where it was (applied and proposed ones stay).
            existing = await self.book.value(iv.id)
            if existing is None or existing.status is not InterventionStatus.PROPOSED:
                return
            iv = existing
        if decision.apply and iv.autonomous:
            await self._apply(iv, approved_by=None)

    async def _apply(self, iv: Intervention, approved_by: str | None) -> Intervention:
        try:
            outcome, status = await self.effects.apply(iv), InterventionStatus.APPLIED
        except InterventionError as exc:
            outcome, status = str(exc), InterventionStatus.FAILED
        self.log.warning("%s %s: %s (%s)", iv.kind.value, status.value, iv.target, outcome)
        return await self._move(
            iv, status, outcome, approved_by=approved_by,
            action=AuditAction.INTERVENTION_APPROVE if approved_by else AuditAction.INTERVENTION,
            actor=approved_by or f"nats:{self.role}",
        )  # fmt: skip

    async def _move(
        self,
        iv: Intervention,
        status: InterventionStatus,
        outcome: str,
        *,
        action: AuditAction,
        actor: str,
        approved_by: str | None = None,
        undone_by: str | None = None,
    ) -> Intervention:
        expected = iv.status

        def step(current: Intervention) -> Intervention | None:
            if current.status is not expected:
                return None
            current.status, current.outcome, current.updated_at = status, outcome, utcnow()
            current.approved_by = approved_by or current.approved_by
            current.undone_by = undone_by or current.undone_by
            return current

        moved = await self.book.update(iv.id, step)
        if moved is None:
            raise InterventionError(f"intervention {iv.id} changed meanwhile")
        await self._tell(moved, action, actor)
        return moved

    async def _tell(self, iv: Intervention, action: AuditAction, actor: str) -> None:
        """The event (readable in SQL and on the dashboard) and the audit entry."""
        ticket = AGENTS_TOKEN
        await self.bus.publish_event(
            Event(
                id=f"{iv.id}.{iv.status.value}",
                type=_EVENTS[iv.status],
                ticket_id=ticket,
                agent=iv.target if iv.kind is InterventionKind.QUARANTINE_WORKER else None,
                data={**iv.model_dump(mode="json"), "reported_by": self.id},
            )
        )
        failed = iv.status is InterventionStatus.FAILED
        await self.bus.publish_audit(
            AuditEntry(
                id=f"guardian-{iv.id}-{iv.status.value}",
                action=action,
                outcome=AuditOutcome.ERROR if failed else AuditOutcome.OK,
                actor=actor,
                role=actor.removeprefix("nats:").split("|")[0],
                via="nats",
                source=self.id,
                client="guardian",
                target=iv.target,
                detail=clip(f"{iv.kind.value} {iv.status.value}: {iv.reason}; {iv.outcome}"),
            )
        )

    # Operators

    async def _approve(self, request: Request) -> bytes:
        return (await self._answer(request, approve=True)).to_json()

    async def _undo(self, request: Request) -> bytes:
        return (await self._answer(request, approve=False)).to_json()

    async def _answer(self, request: Request, *, approve: bool) -> InterventionReply:
        try:
            asked = InterventionRequest.model_validate_json(request.data)
        except ValidationError as exc:
            return InterventionReply(ok=False, error=f"not an intervention request: {exc}")
        iv = await self.book.value(asked.id)
        if iv is None:
            return InterventionReply(ok=False, error=f"no intervention {asked.id!r}")
        by = f"nats:operator ({asked.by})"
        try:
            done = await (self._approved(iv, by) if approve else self._undone(iv, by))
        except InterventionError as exc:
            return InterventionReply(ok=False, intervention=iv, error=str(exc))
        return InterventionReply(ok=done.status is not InterventionStatus.FAILED, intervention=done,
                                 error=done.outcome if done.status is InterventionStatus.FAILED
                                 else None)  # fmt: skip

    async def _approved(self, iv: Intervention, by: str) -> Intervention:
        if iv.status is not InterventionStatus.PROPOSED:
            raise InterventionError(f"{iv.id} is {iv.status.value}, not proposed")
        return await self._apply(iv, approved_by=by)

    async def _undone(self, iv: Intervention, by: str) -> Intervention:
        if iv.status is not InterventionStatus.APPLIED:
            raise InterventionError(f"{iv.id} is {iv.status.value}, not applied")
        outcome = await self.effects.undo(iv)
        self.log.warning("%s undone by %s: %s (%s)", iv.kind.value, by, iv.target, outcome)
        return await self._move(
            iv, InterventionStatus.UNDONE, outcome,
            action=AuditAction.INTERVENTION_UNDO, actor=by, undone_by=by,
        )  # fmt: skip
