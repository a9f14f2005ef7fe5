"""OpenHands tools that let a coding agent work with the others: message, ask, hand off.

Only the session child imports this module (it imports the SDK). The tools run there,
and it has no NATS connection (a task never gets Omoi's
credentials): each tool writes one JSON line on stdout for the worker, which does the NATS
side, and `ask` waits for the worker's answer line on stdin (`Mailbox`).

- `send_message`: to the ticket's channel (every agent on the ticket) or one agent's
  inbox; recorded as a `message.sent` event.
- `read_messages`: what reached this task's agent since it last looked.
- `ask_agent`: a question to another agent (by id) or to any agent of a capability; the
  answer, or that none came in time.
- `handoff`: give this task to another capability or agent, with what it needs to know.
  The conversation should then finish; the task continues elsewhere (`task.handed_off`).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from openhands.sdk.tool import (
    Action,
    Observation,
    ToolDefinition,
    ToolExecutor,
    register_tool,
)
from pydantic import Field

from agents.executors.agent.protocol import AskLine, CallLine, HandoffRequest, MessageLine

ASK_TIMEOUT_S = 120.0
# A provider call is retried by the delivery agent; beyond this the tool says it timed out.
CALL_TIMEOUT_S = 90.0


class Mailbox:
    """What the worker sent the session: answers to questions, and messages."""

    def __init__(self, emit: Callable[[Any], None]) -> None:
        self.emit = emit
        self._lock = threading.Condition()
        self._answers: dict[str, str] = {}
        self._messages: list[str] = []
        self._steering: list[str] = []  # said before the conversation could hear it
        self._steer: Callable[[str], None] | None = None
        self.handoff: HandoffRequest | None = None

    def deliver_answer(self, ask_id: str, text: str) -> None:
        with self._lock:
            self._answers[ask_id] = text
            self._lock.notify_all()

    def deliver_message(self, text: str) -> None:
        with self._lock:
            self._messages.append(text)

    def deliver_steering(self, text: str) -> None:
        """Into the conversation as a user message (it takes it thread-safely, between
        steps), or kept until `steer_with` says how."""
        with self._lock:
            steer = self._steer
            if steer is None:
                self._steering.append(text)
                return
        steer(text)

    def steer_with(self, steer: Callable[[str], None]) -> None:
        with self._lock:
            self._steer, waiting, self._steering = steer, self._steering, []
        for text in waiting:
            steer(text)

    def take_messages(self) -> list[str]:
        with self._lock:
            taken, self._messages = self._messages, []
            return taken

    def ask(self, to: str, question: str, timeout_s: float) -> str | None:
        ask_id = uuid.uuid4().hex
        self.emit(AskLine(id=ask_id, to=to, question=question, timeout_s=timeout_s))
        return self._answer(ask_id, timeout_s)

    def call(self, tool: str, op: str, args: dict[str, Any]) -> str:
        """An integration call, through the worker; the reply's text (JSON)."""
        call_id = uuid.uuid4().hex
        self.emit(CallLine(id=call_id, tool=tool, op=op, args=args))
        answer = self._answer(call_id, CALL_TIMEOUT_S)
        return answer if answer is not None else f"no answer to {tool} {op} in time"

    def _answer(self, ask_id: str, timeout_s: float) -> str | None:
        with self._lock:
            self._lock.wait_for(lambda: ask_id in self._answers, timeout=timeout_s + 5)
            return self._answers.pop(ask_id, None)


class SendMessageAction(Action):
    to: str = Field(description='"ticket" for every agent on this ticket, or an agent id.')
    text: str = Field(description="The message.")


class ReadMessagesAction(Action):
    pass


class AskAgentAction(Action):
    to: str = Field(description="An agent id, or `capability:<name>` for any such agent.")
    question: str = Field(description="The question, with the context it needs.")
    timeout_s: float = Field(default=ASK_TIMEOUT_S, description="How long to wait.")


class HandoffAction(Action):
    capability: str | None = Field(default=None, description="The capability to give to.")
    agent: str | None = Field(default=None, description="Or a particular agent's id.")
    context: str = Field(description="What you did, what is left, and where things are.")


class TeamObservation(Observation):
    pass


class TeamExecutor(ToolExecutor):  # type: ignore[type-arg]
    def __init__(self, act: Callable[[Any], str]) -> None:
        self.act = act

    def __call__(self, action: Any, conversation: Any = None) -> TeamObservation:
        return TeamObservation.from_text(text=self.act(action))


# Module-level classes: a resumed conversation reads its stored actions back by class.
class SendMessageTool(ToolDefinition[SendMessageAction, TeamObservation]):
    name = "send_message"

    @classmethod
    def create(cls, conv_state: Any = None, **params: Any) -> Sequence[Any]:
        raise ValueError("made by agents.executors.agent.team_tools.build_tools")


class ReadMessagesTool(ToolDefinition[ReadMessagesAction, TeamObservation]):
    name = "read_messages"

    @classmethod
    def create(cls, conv_state: Any = None, **params: Any) -> Sequence[Any]:
        raise ValueError("made by agents.executors.agent.team_tools.build_tools")


class AskAgentTool(ToolDefinition[AskAgentAction, TeamObservation]):
    name = "ask_agent"

    @classmethod
    def create(cls, conv_state: Any = None, **params: Any) -> Sequence[Any]:
        raise ValueError("made by agents.executors.agent.team_tools.build_tools")


class HandoffTool(ToolDefinition[HandoffAction, TeamObservation]):
    name = "handoff"

    @classmethod
    def create(cls, conv_state: Any = None, **params: Any) -> Sequence[Any]:
        raise ValueError("made by agents.executors.agent.team_tools.build_tools")


def handoff_in(events: Iterable[Any]) -> HandoffRequest | None:
    """The handoff an earlier run of this conversation asked for. A conversation id is
    fixed per task generation and a handoff ends the generation, so a session resumed
    after a crash between the `handoff` call and the result still hands the task on."""
    asked = None
    for event in events:
        action = getattr(event, "action", None)
        if isinstance(action, HandoffAction) and (action.capability or action.agent):
            asked = HandoffRequest(
                to_capability=action.capability, to_agent=action.agent, context=action.context
            )
    return asked


def build_tools(mailbox: Mailbox) -> list[str]:
    """The team tools, bound to this session's mailbox, registered with the SDK."""

    def send(action: SendMessageAction) -> str:
        mailbox.emit(MessageLine(to=action.to, text=action.text))
        return f"sent to {action.to}"

    def read(_: ReadMessagesAction) -> str:
        messages = mailbox.take_messages()
        return "\n\n".join(messages) if messages else "no new messages"

    def ask(action: AskAgentAction) -> str:
        answer = mailbox.ask(action.to, action.question, action.timeout_s)
        return answer if answer is not None else f"no answer from {action.to} in time"

    def hand_off(action: HandoffAction) -> str:
        if not (action.capability or action.agent):
            return "name a capability or an agent to hand off to"
        mailbox.handoff = HandoffRequest(
            to_capability=action.capability, to_agent=action.agent, context=action.context
        )
        return "handed off: finish now, with a one-line summary; the task goes on elsewhere"

    specs: list[tuple[type[Any], type[Any], str, Callable[[Any], str]]] = [
        (SendMessageTool, SendMessageAction, "Send a message to other agents.", send),
        (ReadMessagesTool, ReadMessagesAction, "Read messages sent to you.", read),
        (AskAgentTool, AskAgentAction, "Ask another agent a question; wait.", ask),
        (HandoffTool, HandoffAction, "Hand this task to another agent.", hand_off),
    ]
    names = []
    for tool_class, action_type, description, act in specs:
        instance = tool_class(
            description=description,
            action_type=action_type,
            observation_type=TeamObservation,
            executor=TeamExecutor(act),
        )
        register_tool(tool_class.name, instance)
        names.append(tool_class.name)
    return names
