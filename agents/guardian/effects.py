"""Applying and undoing interventions: the only part of the guardian that changes anything.

Each effect is idempotent, so applying an intervention again after a crash (or twice from
two guardians) leaves the same result: a quarantine is a key put or deleted; pausing and
resuming a ticket already so is answered as done; holding a held child changes nothing;
cancelling a finished task is no error; a discovery decided meanwhile stays decided.
"""

from __future__ import annotations

from agents.errors import InterventionError
from bus import Bucket, Bus, BusError
from bus import constants as c
from schemas import CancelTask, PauseTicket, Reply, ResumeTicket, SetPriority
from schemas.common import Priority
from schemas.discovery import DiscoveryDecision
from schemas.guardian import Intervention, InterventionKind, Quarantine
from schemas.supervisor import HoldReply, HoldRequest
from schemas.team import TeamMessage

COMMAND_TIMEOUT_S = 5.0


class Effects:
    def __init__(self, bus: Bus, quarantine: Bucket[Quarantine], sender: str) -> None:
        self.bus = bus
        self.quarantine = quarantine
        self.sender = sender  # the guardian's agent id, as messages name it

    async def apply(self, iv: Intervention) -> str:
        """Carry it out; what happened, in a sentence. Raises InterventionError."""
        if iv.kind is InterventionKind.QUARANTINE_WORKER:
            await self.quarantine.put(
                iv.target, Quarantine(agent_id=iv.target, intervention=iv.id, reason=iv.reason)
            )
            return f"worker {iv.target} takes no new task"
        if iv.kind is InterventionKind.HOLD_AGENT:
            await self._supervisor(iv, "hold")
            return f"{iv.target} is held: its supervisor does not restart it"
        if iv.kind is InterventionKind.PAUSE_TICKET:
            body = PauseTicket(ticket_id=iv.target, reason=f"guardian: {iv.reason}")
            await self._command(c.CMD_TICKET_PAUSE, body.model_dump_json().encode())
            return f"ticket {iv.target} paused"
        if iv.kind is InterventionKind.STEER_AGENT:
            return await self._steer(iv)
        if iv.kind is InterventionKind.RAISE_PRIORITY:
            return await self._priority(iv, iv.priority or "high", f"guardian: {iv.reason}")
        if iv.kind is InterventionKind.APPROVE_DISCOVERY:
            return await self._approve_discovery(iv)
        if iv.kind is InterventionKind.CANCEL_TASK:
            body_task = CancelTask(task_id=iv.target, reason=f"guardian: {iv.reason}")
            reply = await self._command(
                c.CMD_TASK_CANCEL, body_task.model_dump_json().encode(), done_if="already_finished"
            )
            return f"task {iv.target} cancelled" if not reply.error else reply.error.message
        raise InterventionError(f"no effect for {iv.kind}")

    async def undo(self, iv: Intervention) -> str:
        if not iv.reversible:
            raise InterventionError(f"{iv.kind.value} cannot be undone")
        if iv.kind is InterventionKind.QUARANTINE_WORKER:
            current = await self.quarantine.value(iv.target)
            # A later intervention's quarantine is that one's to lift.
            if current is not None and current.intervention == iv.id:
                await self.quarantine.delete(iv.target)
            return f"worker {iv.target} takes tasks again"
        if iv.kind is InterventionKind.HOLD_AGENT:
            await self._supervisor(iv, "release")
            return f"{iv.target} is released: its supervisor starts it again"
        if iv.kind is InterventionKind.PAUSE_TICKET:
            body = ResumeTicket(ticket_id=iv.target, reason=f"guardian {iv.id} undone")
            await self._command(c.CMD_TICKET_RESUME, body.model_dump_json().encode())
            return f"ticket {iv.target} resumed"
        if iv.kind is InterventionKind.RAISE_PRIORITY:
            back = iv.previous_priority or "normal"
            return await self._priority(iv, back, f"guardian {iv.id} undone")
        raise InterventionError(f"{iv.kind.value} cannot be undone")

    async def _priority(self, iv: Intervention, priority: Priority, reason: str) -> str:
        body = SetPriority(ticket_id=iv.target, priority=priority, reason=reason)
        reply = await self._command(
            c.CMD_TICKET_PRIORITY, body.model_dump_json().encode(), done_if="already_finished"
        )
        if reply.error:
            return reply.error.message
        return f"ticket {iv.target} is {priority}"

    async def _approve_discovery(self, iv: Intervention) -> str:
        ticket_id = iv.target.rsplit(".", 2)[0]  # a discovery id: <ticket>.<task>.<n>
        body = DiscoveryDecision(ticket_id=ticket_id, discovery_id=iv.target, approve=True,
                                 reason=f"approved by the guardian: {iv.reason}")  # fmt: skip
        reply = await self._command(
            c.CMD_TICKET_DISCOVERY, body.model_dump_json().encode(), done_if="not_found"
        )
        if reply.error:
            return f"discovery {iv.target} was decided already"
        return f"discovery {iv.target} approved: a task is made of it"

    async def _steer(self, iv: Intervention) -> str:
        """Into the worker's inbox, which says it into the ticket's running conversations."""
        if iv.worker is None or not iv.message:
            raise InterventionError("a steering message needs a worker and a text")
        ticket_id, _, task = iv.target.partition(".")
        said = TeamMessage(
            kind="steer", ticket_id=ticket_id, task=task, sender=self.sender, text=iv.message
        )
        try:
            await self.bus.notify(c.agent_inbox(iv.worker), said.to_json())
        except BusError as exc:
            raise InterventionError(f"could not reach {iv.worker}: {exc}") from exc
        return f"told the agent on {iv.worker}"

    async def _supervisor(self, iv: Intervention, verb: str) -> None:
        host, _, child = iv.target.partition(".")
        asked = HoldRequest(child=child, reason=f"guardian: {iv.reason}")
        try:
            raw = await self.bus.request(
                c.supervisor_subject(host, verb), asked.to_json(), COMMAND_TIMEOUT_S
            )
        except BusError as exc:
            raise InterventionError(f"the supervisor of {host} did not answer: {exc}") from exc
        reply = HoldReply.model_validate_json(raw)
        if not reply.ok:
            raise InterventionError(reply.error or f"the supervisor of {host} refused")

    async def _command(self, subject: str, data: bytes, *, done_if: str | None = None) -> Reply:
        """The planner's reply; InterventionError unless it is ok or refused only as
        `done_if` (a category that means the work is done already)."""
        try:
            raw = await self.bus.request(subject, data, COMMAND_TIMEOUT_S)
        except BusError as exc:
            raise InterventionError(f"no planner answered {subject}: {exc}") from exc
        reply = Reply.model_validate_json(raw)
        if reply.ok:
            return reply
        category = reply.error.category if reply.error else "error"
        if done_if is not None and category == done_if:
            return reply
        message = reply.error.message if reply.error else "refused"
        raise InterventionError(f"{category}: {message}")
