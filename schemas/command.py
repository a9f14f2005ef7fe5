"""Operator commands (request/reply on `omoi.commands.*`) and the replies to them and to intake."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.common import ErrorInfo, Phase, Priority, StrictWireModel, WireModel


class CancelTicket(StrictWireModel):
    ticket_id: str
    reason: str = "cancelled by operator"


class CancelTask(StrictWireModel):
    task_id: str = Field(description="<ticket_id>.<task_name>")
    reason: str = "cancelled by operator"


class MoveTicket(StrictWireModel):
    ticket_id: str
    phase: Phase
    reason: str = "moved by operator"


class PauseTicket(StrictWireModel):
    ticket_id: str
    reason: str = "paused by operator"


class ResumeTicket(StrictWireModel):
    ticket_id: str
    reason: str = "resumed by operator"


class SetPriority(StrictWireModel):
    """A ticket's new priority. Its tasks queued from then on wait in that priority's
    lane; those queued and not yet started move there too."""

    ticket_id: str
    priority: Priority
    reason: str = "set by operator"


class DeliverTicket(StrictWireModel):
    """Push a ticket's branch (and open its pull request) again, after a delivery failed."""

    ticket_id: str
    reason: str = "asked by operator"


class PullRequestUpdate(StrictWireModel):
    """What happened to a ticket's pull request, as its provider's webhook said: merged
    (the ticket is done), closed unmerged (cancelled), or reviewed with a request for
    changes (a follow-up task on the same branch; `review_id` names it, so the same
    review twice makes one task)."""

    ticket_id: str
    action: Literal["merged", "closed", "review"]
    number: int | None = None
    review_id: int | None = Field(default=None, ge=1)
    author: str = Field(default="", max_length=200)
    body: str = Field(default="", max_length=20_000)
    url: str | None = Field(default=None, max_length=2000)


class Reply(WireModel):
    """The JSON answer to an intake request or a command."""

    ok: bool
    ticket_id: str | None = None
    task_id: str | None = None
    duplicate: bool = False
    message: str = ""
    error: ErrorInfo | None = None
