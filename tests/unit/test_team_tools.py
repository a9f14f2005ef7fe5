"""The coding agent's team tools, as the session child sees them: what a resumed
conversation remembers of a handoff it asked for before a crash."""

from __future__ import annotations

import os

# The SDK (under team_tools) fetches litellm's cost map on import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENHANDS_SUPPRESS_BANNER", "1")

from openhands.sdk.event import ActionEvent, Event, MessageEvent
from openhands.sdk.llm import Message, MessageToolCall, TextContent

from agents.executors.agent.protocol import HandoffRequest
from agents.executors.agent.team_tools import HandoffAction, SendMessageAction, handoff_in


def _called(action: HandoffAction | SendMessageAction, name: str, n: int) -> Event:
    """The action event as a persisted conversation reads it back: through JSON."""
    event = ActionEvent(
        thought=[TextContent(text="")],
        action=action,
        tool_name=name,
        tool_call_id=f"call-{n}",
        tool_call=MessageToolCall(
            id=f"call-{n}", name=name, arguments=action.model_dump_json(), origin="completion"
        ),
        llm_response_id=f"response-{n}",
    )
    return Event.model_validate_json(event.model_dump_json())


def test_a_resumed_conversation_keeps_the_handoff_it_asked_for() -> None:
    prompt = MessageEvent(
        source="user", llm_message=Message(role="user", content=[TextContent(text="Draft it.")])
    )
    events = [
        prompt,
        _called(SendMessageAction(to="ticket", text="drafted"), "send_message", 1),
        _called(HandoffAction(capability="gpu", context="first thought"), "handoff", 2),
        _called(HandoffAction(capability="review", context="half done"), "handoff", 3),
    ]
    # The last one asked for counts: the agent changed its mind.
    assert handoff_in(events) == HandoffRequest(to_capability="review", context="half done")


def test_no_handoff_without_a_target_or_a_call() -> None:
    assert handoff_in([]) is None
    # The tool refused this one ("name a capability or an agent"): nothing was handed off.
    assert handoff_in([_called(HandoffAction(context="to whom?"), "handoff", 1)]) is None
    assert (
        handoff_in([_called(SendMessageAction(to="ticket", text="hi"), "send_message", 1)]) is None
    )
