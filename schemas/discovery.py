"""Discoveries: more work a coding agent noticed (a bug, a missing test, a follow-up),
reported through its `discover` tool and judged by the planner.

The worker publishes `discovery.reported` (data: `DiscoveryReport`); the planner answers
with `discovery.accepted` (a task is made), `discovery.rejected` (why) or `discovery.held`
(an operator approves or rejects it: `omoi ticket discovery ID DISCOVERY --approve`), and
keeps each in the ticket's `discoveries`, so where every task came from stays on record.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from schemas.common import Phase, StrictWireModel, WireModel

DiscoveryKind = Literal["bug", "missing_test", "follow_up"]
# Where each kind is done unless the agent says otherwise.
DEFAULT_PHASE: dict[str, Phase] = {
    "bug": Phase.IMPLEMENTATION,
    "missing_test": Phase.TESTING,
    "follow_up": Phase.IMPLEMENTATION,
}


class Discovery(StrictWireModel):
    """What the agent reports: checked by the tool and again by the planner."""

    kind: DiscoveryKind
    title: str = Field(min_length=3, max_length=200)
    description: str = Field(default="", max_length=5_000)
    phase: Phase | None = None
    # What the agent thinks the work costs; above the ticket's threshold it needs approval.
    estimate_usd: float | None = Field(default=None, ge=0)


class DiscoveryReport(WireModel):
    id: str  # `<ticket>.<from task>.<n>`: the n-th discovery of that attempt
    ticket_id: str
    from_task: str
    # How many discoveries led to the reporting task (0: a task of the ticket's own).
    depth: int = 0
    discovery: Discovery


class DiscoveryStatus(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    HELD = "held"


class DiscoveryState(WireModel):
    """One discovery as the ticket keeps it (`TicketState.discoveries`)."""

    id: str
    from_task: str
    kind: DiscoveryKind
    title: str
    status: DiscoveryStatus
    reason: str = ""
    task: str | None = None  # the task made of it
    # Why it waits, while it does: it opens a phase with no work yet, or its estimate is
    # over the planner's threshold (`estimate_usd`). The guardian reads both.
    held_for: Literal["phase", "estimate"] | None = None
    estimate_usd: float | None = None
    report: DiscoveryReport | None = None  # kept while held, to make the task on approval


class DiscoveryDecision(StrictWireModel):
    """An operator's answer to a held discovery."""

    ticket_id: str
    discovery_id: str
    approve: bool
    reason: str = "decided by operator"


DiscoveryVerdict = Literal["accept", "reject", "hold"]
# A task made of a discovery has the origin `discovery:<depth>:<discovery id>`.
DISCOVERY_ORIGIN = "discovery:"


def discovery_depth(origin: str | None) -> int:
    """How many discoveries led to the task of this origin (0: none)."""
    if not origin or not origin.startswith(DISCOVERY_ORIGIN):
        return 0
    level = origin.removeprefix(DISCOVERY_ORIGIN).split(":", 1)[0]
    return int(level) if level.isdigit() else 0
