"""The worker's side of agents talking to each other (`agents.executors.agent.team_tools`
is the coding agent's side).

Subjects (README, "Topology"): an inbox per agent, `omoi.agents.<agent>.inbox`; a channel
per ticket, `omoi.channels.<ticket>`; questions to any agent of a capability,
`omoi.ask.<capability>` (one of them answers: a queue group). Each message is a JSON
`TeamMessage`, and every one sent is recorded as a `message.sent` event on the ticket.

Messages reaching this worker (its inbox, the channels of tickets it runs tasks of) go to
the running sessions of that ticket. A question is answered by this worker's model, told
what the worker is working on; without a model it says it cannot answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pydantic import ValidationError

from agents.events import task_event
from agents.llm.client import ModelClient, ModelError
from bus import Bus, BusError, Request
from bus import constants as c
from schemas import Event, EventType, TaskState
from schemas.discovery import Discovery, DiscoveryReport, discovery_depth
from schemas.integration import IntegrationCall, IntegrationReply
from schemas.team import TeamMessage

log = logging.getLogger(__name__)

ANSWER_MARKER = "omoi:answer"
ANSWER_SYSTEM = (
    "You are a coding agent in a team working on one ticket. Another agent asks you a "
    "question; answer it briefly and precisely from what you know of your own work."
)
# The delivery agent retries a provider a few times; past this the call is lost to the tool.
INTEGRATION_TIMEOUT_S = 60.0
# A session's ear: (kind, text), kind "message" or "steer".
Listener = Callable[[str, str], Awaitable[None]]


class Team:
    def __init__(
        self,
        bus: Bus,
        agent_id: str,
        capabilities: Sequence[str],
        model: ModelClient | None,
        running: Callable[[], list[TaskState]],
    ) -> None:
        self.bus = bus
        self.agent_id = agent_id
        self.capabilities = list(capabilities)
        self.model = model
        self.running = running
        self._listeners: dict[str, list[Listener]] = {}  # ticket -> sessions
        self._sent = 0
        self._subs: list[object] = []

    async def start(self) -> None:
        self._subs = [
            await self.bus.serve(c.agent_inbox(self.agent_id), self._on_message),
            await self.bus.serve(c.TICKET_CHANNELS, self._on_message),
            *[
                await self.bus.serve(c.capability_questions(cap), self._on_message, queue=cap)
                for cap in self.capabilities
            ],
        ]

    async def stop(self) -> None:
        for sub in self._subs:
            unsubscribe = getattr(sub, "unsubscribe", None)
            if unsubscribe is not None:
                try:
                    await unsubscribe()
                except BusError:
                    log.debug("unsubscribe failed on stop", exc_info=True)
        self._subs = []

    def listen(self, ticket_id: str, listener: Listener) -> Callable[[], None]:
        """Deliver messages about `ticket_id` to a running session, until undone."""
        self._listeners.setdefault(ticket_id, []).append(listener)

        def undo() -> None:
            found = self._listeners.get(ticket_id, [])
            if listener in found:
                found.remove(listener)

        return undo

    # Sending (from a running session)

    async def send(self, task: TaskState, to: str, text: str) -> None:
        message = TeamMessage(ticket_id=task.ticket_id, task=task.name, sender=self.agent_id,
                              text=text)  # fmt: skip
        subject = c.ticket_channel(task.ticket_id) if to == "ticket" else c.agent_inbox(to)
        await self.bus.notify(subject, message.model_dump_json().encode())
        await self._record(task, to, text, "message")

    async def ask(self, task: TaskState, to: str, question: str, timeout_s: float) -> str | None:
        message = TeamMessage(kind="question", ticket_id=task.ticket_id, task=task.name,
                              sender=self.agent_id, text=question)  # fmt: skip
        cap = to.removeprefix("capability:")
        subject = c.capability_questions(cap) if to.startswith("capability:") else (
            c.agent_inbox(to)
        )  # fmt: skip
        await self._record(task, to, question, "question")
        try:
            reply = await self.bus.request(subject, message.model_dump_json().encode(), timeout_s)
        except BusError as exc:
            log.info("%s asked %s, no answer: %s", task.id, to, exc)
            return None
        answer = json.loads(reply).get("answer")
        return str(answer) if answer is not None else None

    async def call(
        self, task: TaskState, call_id: str, tool: str, op: str, args: dict[str, Any]
    ) -> str:
        """An integration call for a running task, made by a delivery agent; what the agent
        reads back (the provider's answer, or why there is none)."""
        try:
            asked = IntegrationCall(id=call_id, ticket_id=task.ticket_id, task=task.name,
                                    tool=tool, op=op, args=args)  # fmt: skip
        except ValidationError as exc:
            return f"not a call: {exc}"
        subject = c.integration_subject(tool, op)
        try:
            raw = await self.bus.request(subject, asked.to_json(), INTEGRATION_TIMEOUT_S,
                                         ticket_id=task.ticket_id)  # fmt: skip
        except BusError as exc:
            return f"no delivery agent answered {tool} {op}: {exc}"
        try:
            reply = IntegrationReply.model_validate_json(raw)
        except ValidationError:
            return f"an unreadable answer to {tool} {op}"
        if reply.ok:
            return reply.result
        return f"{tool} {op} failed ({reply.category}): {reply.error}"

    async def _record(self, task: TaskState, to: str, text: str, kind: str) -> None:
        self._sent += 1
        base = task_event(task, EventType.MESSAGE_SENT, self.agent_id, to=to, message=kind,
                          text=text[:4000])  # fmt: skip
        await self.bus.publish_event(base.model_copy(update={"id": f"{base.id}.{self._sent}"}))

    # Receiving

    async def _on_message(self, request: Request) -> bytes | None:
        try:
            message = TeamMessage.model_validate_json(request.data)
        except ValidationError:
            log.warning("not a team message on %s", request.subject)
            return None
        if message.kind == "question":
            return json.dumps({"answer": await self._answer(message)}).encode()
        if message.sender == self.agent_id:
            return None  # its own, on a channel
        if message.kind == "steer":
            for listener in list(self._listeners.get(message.ticket_id, [])):
                await listener("steer", f"[from {message.sender}] {message.text}")
            return None
        for listener in list(self._listeners.get(message.ticket_id, [])):
            await listener("message", f"from {message.sender} ({message.task}): {message.text}")
        return None

    async def _answer(self, question: TeamMessage) -> str:
        if self.model is None:
            return f"{self.agent_id} has no model to answer with"
        working_on = (
            "\n".join(
                f"- {t.id}: {(t.instructions or t.command or t.name)[:500]}" for t in self.running()
            )
            or "- nothing right now"
        )
        prompt = (
            f"{ANSWER_MARKER}\nYou are agent {self.agent_id}. You are working on:\n"
            f"{working_on}\n\nAgent {question.sender} (task {question.task} of ticket "
            f"{question.ticket_id}) asks:\n{question.text}"
        )
        try:
            return (await self.model.complete(ANSWER_SYSTEM, prompt, max_tokens=800)).text
        except ModelError as exc:
            return f"{self.agent_id} could not answer: {exc}"


class TaskTeam:
    """`Team` as one running task sees it (`agents.executors.base.TeamLink`)."""

    def __init__(self, team: Team, task: TaskState) -> None:
        self.team = team
        self.task = task

    async def send(self, to: str, text: str) -> None:
        await self.team.send(self.task, to, text)

    async def ask(self, to: str, question: str, timeout_s: float) -> str | None:
        return await self.team.ask(self.task, to, question, timeout_s)

    def listen(self, listener: Listener) -> Callable[[], None]:
        return self.team.listen(self.task.ticket_id, listener)

    async def call(self, call_id: str, tool: str, op: str, args: dict[str, Any]) -> str:
        return await self.team.call(self.task, call_id, tool, op, args)

    async def discover(self, n: int, found: Discovery) -> None:
        """A discovery, for the planner to judge (`discovery.reported`); its id names the
        attempt and the report's place in it, so a re-sent line is one report."""
        task = self.task
        report = DiscoveryReport(
            id=f"{task.id}.{task.generation}-{task.attempts}-{n}",
            ticket_id=task.ticket_id,
            from_task=task.name,
            depth=discovery_depth(task.origin),
            discovery=found,
        )
        await self.team.bus.publish_event(
            Event(
                id=f"{report.id}.{EventType.DISCOVERY_REPORTED.value}",
                type=EventType.DISCOVERY_REPORTED,
                ticket_id=task.ticket_id,
                task=task.name,
                agent=self.team.agent_id,
                data=report.model_dump(mode="json"),
            )
        )
