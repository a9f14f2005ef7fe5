"""The `discover` tool's OpenHands definitions. Imported only in a coding agent's session
(it imports the SDK); its classes are module-level because a resumed conversation reads
its stored actions back by class."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from openhands.sdk.tool import Action, Observation, ToolDefinition, ToolExecutor, register_tool
from pydantic import Field, ValidationError

from agents.executors.agent.protocol import DiscoveryLine
from schemas.discovery import Discovery

DESCRIPTION = (
    "Report more work you noticed that is not part of your task: a bug, a missing test, a "
    "follow-up. Do not do it yourself."
)


# Not `kind`: the SDK's actions have a field of that name.
class DiscoverAction(Action):
    category: str = Field(description="bug, missing_test or follow_up")
    title: str = Field(description="What needs doing, in one line.")
    description: str = Field(default="", description="Where, why, and how you know.")
    phase: str | None = Field(
        default=None,
        description="The phase it belongs in, if not the usual one (implementation; testing "
        "for missing tests).",
    )
    estimate_usd: float | None = Field(default=None, description="What it might cost.")


class DiscoverObservation(Observation):
    pass


class DiscoverExecutor(ToolExecutor):  # type: ignore[type-arg]
    def __init__(self, emit: Callable[[Any], None]) -> None:
        self.emit = emit
        self.count = 0

    def __call__(self, action: Any, conversation: Any = None) -> DiscoverObservation:
        fields = action.model_dump(include={"title", "description", "phase", "estimate_usd"})
        try:
            found = Discovery.model_validate({"kind": action.category, **fields})
        except ValidationError as exc:
            return DiscoverObservation.from_text(text=f"not reported: {exc}")
        self.count += 1
        self.emit(DiscoveryLine(n=self.count, discovery=found))
        return DiscoverObservation.from_text(
            text="reported; the planner decides whether it becomes a task. Go on with yours."
        )


class DiscoverTool(ToolDefinition[DiscoverAction, DiscoverObservation]):
    name = "discover"

    @classmethod
    def create(cls, conv_state: Any = None, **params: Any) -> Sequence[Any]:
        raise ValueError("made by agents.tools.discover_tool.register")


def register(emit: Callable[[Any], None]) -> list[str]:
    register_tool(
        DiscoverTool.name,
        DiscoverTool(
            description=DESCRIPTION,
            action_type=DiscoverAction,
            observation_type=DiscoverObservation,
            executor=DiscoverExecutor(emit),
        ),
    )
    return [DiscoverTool.name]
