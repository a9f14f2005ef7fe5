"""What a host's supervisor (`omoi up`) says about its children, and what it is asked:
`omoi.supervisors.<host>.status|restart|hold|release` (request/reply)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

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
    # The agent role it runs (None: not an agent), and why it is held, if it is.
    role: str | None = None
    held: str | None = None


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


class HoldRequest(WireModel):
    """Hold (or release) a child by its name in the supervisor: a held child is stopped and
    not restarted until it is released."""

    child: str
    reason: str = ""


class HoldReply(WireModel):
    ok: bool
    child: str | None = None
    held: bool = False
    error: str | None = None


class ProfileRequest(WireModel):
    """Profile the child running as `agent_id` for `seconds` (py-spy)."""

    agent_id: str
    seconds: int = Field(default=10, ge=1, le=300)
    format: Literal["flamegraph", "speedscope", "raw"] = "flamegraph"
    idle: bool = False


class ProfileReply(WireModel):
    ok: bool
    # The profile, gzip-compressed and base64-encoded.
    data: str = ""
    error: str | None = None


class ScaleRequest(WireModel):
    """Run this many workers of a pool (`<phase>-<capability>`, one the supervisor was
    given), or, with no `replicas`, only say how many run."""

    pool: str = Field(pattern=r"^[a-z]+-[a-z0-9_-]+$", max_length=100)
    replicas: int | None = Field(default=None, ge=0, le=256)
    reason: str = ""


class ScaleReply(WireModel):
    ok: bool
    pool: str = ""
    replicas: int = 0  # how many of the pool's workers it runs now
    error: str | None = None
