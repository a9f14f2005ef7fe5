"""Agent heartbeats, kept in `omoi_heartbeats` under the agent id."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from schemas.common import WireModel, utcnow


class Heartbeat(WireModel):
    agent_id: str
    role: str
    phases: list[str] = Field(default_factory=list)
    capabilities: list[str] = Field(default_factory=list)
    # A worker's labels and how many tasks it runs at once (best-fit assignment).
    labels: list[str] = Field(default_factory=list)
    slots: int = 1
    current_task: str | None = None
    # A worker the guardian quarantined: the intervention's id (it takes no new task).
    quarantined: str | None = None
    status: str = "idle"
    # True once the agent serves its subjects: `omoi up` waits for this before it says so.
    ready: bool = False
    host: str = ""
    pid: int = 0
    interval_s: float = 30.0
    started_at: datetime = Field(default_factory=utcnow)
    at: datetime = Field(default_factory=utcnow)

    def age_s(self, now: datetime) -> float:
        return (now - self.at).total_seconds()

    def is_stale(self, now: datetime, missed_beats: int = 3) -> bool:
        return self.age_s(now) > missed_beats * self.interval_s
