"""What the worker and a session child say to each other: a spec in, JSON lines out."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from schemas.common import WireModel
from schemas.discovery import Discovery
from schemas.usage import Budget, Usage

Outcome = Literal["finished", "budget", "error", "stuck", "interrupted", "handoff"]


class ModelSpec(WireModel):
    model: str
    base_url: str | None = None
    input_cost_per_token: float | None = None
    output_cost_per_token: float | None = None
    num_retries: int = 2
    timeout_s: float = 120.0


class SessionSpec(WireModel):
    task_id: str
    conversation_id: str
    workspace: str
    state_dir: str
    prompt: str
    model: ModelSpec
    budget: Budget = Field(default_factory=Budget)
    progress_interval_s: float = 2.0
    # The tools (agents/tools) the conversation gets besides Omoi's own.
    tools: list[str] = Field(default_factory=list)


class Progress(WireModel):
    kind: Literal["progress"] = "progress"
    tool_calls: int = 0
    last_tool: str | None = None
    last_command: str | None = None
    files: list[str] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)


class HandoffRequest(WireModel):
    """The agent gives its task to another capability or agent, with its context."""

    to_capability: str | None = None
    to_agent: str | None = None
    context: str = ""


class ModelCall(WireModel):
    """One call the conversation made to its model, for the attempt's trace."""

    kind: Literal["model_call"] = "model_call"
    model: str
    ended_at: datetime
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0


# Out, from the session: a message to send, a question to ask.
class MessageLine(WireModel):
    kind: Literal["message"] = "message"
    to: str
    text: str


class DiscoveryLine(WireModel):
    """The `discover` tool's report: the n-th of this session."""

    kind: Literal["discovery"] = "discovery"
    n: int
    discovery: Discovery


class CallLine(WireModel):
    """An integration tool's call (schemas/integration.py); answered like a question."""

    kind: Literal["call"] = "call"
    id: str
    tool: str
    op: str
    args: dict[str, Any] = Field(default_factory=dict)


class AskLine(WireModel):
    kind: Literal["ask"] = "ask"
    id: str
    to: str
    question: str
    timeout_s: float


# In, from the worker (stdin, after the spec and the key): answers and messages.
class InboundLine(WireModel):
    # `steer`: said into the conversation at once (a user message), not left to be read.
    kind: Literal["answer", "message", "steer"]
    id: str | None = None
    text: str


class SessionResult(WireModel):
    kind: Literal["result"] = "result"
    outcome: Outcome
    handoff: HandoffRequest | None = None
    message: str = ""
    summary: str = ""
    resumed: bool = False
    files: list[str] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
