"""OpenHands tools that let a coding agent work with the others: message, ask, hand off.

They run in the session child, which has no NATS connection (a task never gets Omoi's
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
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import Field

from agents.executors.agent.protocol import AskLine, HandoffRequest, MessageLine

ASK_TIMEOUT_S = 120.0


class Mailbox:
    """What the worker sent the session: answers to questions, and messages."""

    def __init__(self, emit: Callable[[Any], None]) -> None:
        self.emit = emit
        self._lock = threading.Condition()
        self._answers: dict[str, str] = {}
        self._messages: list[str] = []
        self.handoff: HandoffRequest | None = None

    def deliver_answer(self, ask_id: str, text: str) -> None:
        with self._lock:
            self._answers[ask_id] = text
            self._lock.notify_all()

    def deliver_message(self, text: str) -> None:
        with self._lock:
            self._messages.append(text)

    def take_messages(self) -> list[str]:
        with self._lock:
            taken, self._messages = self._messages, []
            return taken

    def ask(self, to: str, question: str, timeout_s: float) -> str | None:
        ask_id = uuid.uuid4().hex
        self.emit(AskLine(id=ask_id, to=to, question=question, timeout_s=timeout_s))
        with self._lock:
            self._lock.wait_for(lambda: ask_id in self._answers, timeout=timeout_s + 5)
            return self._answers.pop(ask_id, None)


def build_tools(mailbox: Mailbox) -> list[Any]:
    """The team tools, bound to this session's mailbox, registered with the SDK."""
    from openhands.sdk.tool import (
        Action,
        Observation,
        ToolDefinition,
        ToolExecutor,
        register_tool,
    )

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

    def text(value: str) -> TeamObservation:
        return TeamObservation.from_text(text=value)

    class Run(ToolExecutor):  # type: ignore[type-arg]
        def __init__(self, act: Callable[[Any], str]) -> None:
            self.act = act

        def __call__(self, action: Any, conversation: Any = None) -> TeamObservation:
            return text(self.act(action))

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

    specs: list[tuple[str, type[Any], str, Callable[[Any], str]]] = [
        ("send_message", SendMessageAction, "Send a message to other agents.", send),
        ("read_messages", ReadMessagesAction, "Read messages sent to you.", read),
        ("ask_agent", AskAgentAction, "Ask another agent a question; wait.", ask),
        ("handoff", HandoffAction, "Hand this task to another agent.", hand_off),
    ]
    tools = []
    for name, action_type, description, act in specs:
        tool_class = type(
            f"Omoi{name.title().replace('_', '')}Tool",
            (ToolDefinition,),
            {"name": name, "create": classmethod(_no_create)},
        )
        instance = tool_class(
            description=description,
            action_type=action_type,
            observation_type=TeamObservation,
            executor=Run(act),
        )
        register_tool(name, instance)
        tools.append(name)
    return tools


def _no_create(cls: type[Any], /, conv_state: Any = None, **params: Any) -> Sequence[Any]:
    raise ValueError(f"{cls.__name__} is made by agents.executors.agent.team_tools")
