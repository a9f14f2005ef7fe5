"""Integration calls: a coding agent's GitHub, Jira or Supabase tool asks, the delivery agent
(the only role holding those credentials) does it and answers.

The session writes a `call` line; its worker sends an `IntegrationCall` as a request on
`omoi.integrations.<tool>.<op>`; the delivery agent checks that the task declared the tool
and that the target is the ticket's own (its repository, its Jira project, the configured
Supabase project), calls the provider, and answers an `IntegrationReply`. Every call is an
`integration.called` event (its arguments clipped, never a credential).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from schemas.common import StrictWireModel, WireModel

IntegrationTool = Literal["github", "jira", "supabase"]
# What each tool may be asked to do.
OPERATIONS: dict[str, tuple[str, ...]] = {
    "github": ("read_issue", "comment", "open_pull_request", "review_comments"),
    "jira": ("read", "comment", "transition"),
    "supabase": ("migrate", "table_schema"),
}


class IntegrationCall(StrictWireModel):
    id: str = Field(min_length=1, max_length=200)  # the session's call id: one event per call
    ticket_id: str
    task: str
    tool: IntegrationTool
    op: str
    args: dict[str, Any] = Field(default_factory=dict)


class IntegrationReply(WireModel):
    ok: bool
    # What the provider answered, as the agent reads it (JSON text, clipped).
    result: str = ""
    error: str | None = None
    # refused (not this task's, not this ticket's target), invalid (bad arguments),
    # unconfigured, provider (the provider said no), unreachable.
    category: Literal["refused", "invalid", "unconfigured", "provider", "unreachable"] | None = None
