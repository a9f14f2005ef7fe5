"""What agents say to each other on `omoi.agents.<agent>.inbox`, `omoi.channels.<ticket>`
and `omoi.ask.<capability>` (agents/worker/team.py); the guardian steers through it too."""

from __future__ import annotations

from typing import Literal

from schemas.common import WireModel


class TeamMessage(WireModel):
    # A steer goes into the running conversation itself, as a user message (the guardian's
    # advice to a stuck agent); a message waits for the agent to read its messages.
    kind: Literal["message", "question", "steer"] = "message"
    ticket_id: str
    task: str
    # Who sends it: a worker's agent id, or the guardian's.
    sender: str
    text: str
