"""Delivery: a finished ticket's branch pushed to its repository, and its pull request.

The planner asks (`omoi.deliveries.<ticket>`, a `DeliveryRequest`); the delivery agent
pushes and, for a GitHub repository, opens the pull request, then reports what happened
as a `delivery.succeeded` or `delivery.failed` event (a `DeliveryReport`), which the
planner folds into the ticket's `DeliveryState`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field, model_validator

from schemas.common import StrictWireModel, WireModel

BRANCH_PREFIX = "omoi/"
# "owner/name", as GitHub spells a repository.
GITHUB_REPO_PATTERN = r"^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$"


def branch_for(ticket_id: str) -> str:
    return f"{BRANCH_PREFIX}{ticket_id}"


class TicketSource(StrictWireModel):
    """Where a ticket is tracked outside Omoi: a GitHub issue or a Jira issue."""

    provider: Literal["github", "jira"]
    # GitHub: the repository ("owner/name") and the number. Jira: the issue key.
    repo: str | None = Field(default=None, pattern=GITHUB_REPO_PATTERN)
    number: int | None = Field(default=None, ge=1)
    key: str | None = Field(default=None, pattern=r"^[A-Z][A-Z0-9_]{0,30}-[0-9]{1,12}$")
    url: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _named(self) -> TicketSource:
        if self.provider == "github" and self.repo is None:
            raise ValueError("a GitHub source names its repository (repo: owner/name)")
        if self.provider == "jira" and self.key is None:
            raise ValueError("a Jira source names its issue (key: PROJ-1)")
        return self


class DeliveryStatus(StrEnum):
    NONE = "none"  # not asked for yet (or asked again: `omoi ticket deliver`)
    PENDING = "pending"  # a request is out, waiting for the delivery agent's report
    OPEN = "open"  # pushed, its pull request open for review
    DELIVERED = "delivered"  # pushed (and its pull request merged, when it has one)
    FAILED = "failed"  # the last attempt failed: the ticket waits, its branch kept
    CLOSED = "closed"  # its pull request was closed without merging


class PullRequest(WireModel):
    number: int
    url: str


class DeliveryState(WireModel):
    """Where a ticket's delivery stands, kept in its state (`TicketState.delivery`)."""

    attempts: int = 0
    status: DeliveryStatus = DeliveryStatus.NONE
    branch: str | None = None
    # The commit asked to be delivered, and the remote it went to.
    commit: str | None = None
    remote: str | None = None
    pull_request: PullRequest | None = None
    error: str | None = None
    category: str | None = None
    # How often this attempt's request was sent again after it went missing.
    resent: int = 0


class DeliveryRequest(StrictWireModel):
    """What the planner asks the delivery agent to do: push `commit` as `branch`."""

    ticket_id: str
    attempt: int = Field(ge=1)
    commit: str = Field(pattern=r"^[0-9a-f]{40}$")
    branch: str
    repository: str
    # The GitHub repository to open the pull request on; None: a push only.
    github_repo: str | None = Field(default=None, pattern=GITHUB_REPO_PATTERN)
    # The pull request already open for this branch (a follow-up push updates it).
    pull_request: PullRequest | None = None


class DeliveryReport(WireModel):
    """What one delivery attempt did: the data of `delivery.succeeded` / `delivery.failed`."""

    ticket_id: str
    attempt: int
    delivered: bool
    branch: str
    commit: str
    remote: str
    # Whether the branch reached the remote (a failed pull request call leaves it there).
    pushed: bool = False
    pull_request: PullRequest | None = None
    error: str | None = None
    # push_rejected, remote_missing, no_rights, workspace_missing, pull_request_failed
    category: str | None = None
