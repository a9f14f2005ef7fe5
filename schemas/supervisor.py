"""What a host's supervisor (`omoi up`) says about its children, and what it is asked:
`omoi.supervisors.<host>.status` and `omoi.supervisors.<host>.restart` (request/reply)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from schemas.common import WireModel


class ChildStatus(WireModel):
    name: str  # the child's name in its supervisor: worker-1, planner ...
    agent_id: str | None = None  # the agent id of its current start
    pid: int | None = None
    running: bool
    restarts: int = 0
    # When it was (re)started after exiting, newest last; a crash loop shows here.
    restarted_at: list[datetime] = Field(default_factory=list)
    last_exit: int | None = None


class SupervisorStatus(WireModel):
    host: str
    children: list[ChildStatus]


class RestartRequest(WireModel):
    agent_id: str
    reason: str


class RestartReply(WireModel):
    ok: bool
    child: str | None = None
    restarts: int = 0
    error: str | None = None
