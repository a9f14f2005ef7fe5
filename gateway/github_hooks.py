"""GitHub webhook deliveries: is it GitHub's (the signature), and what it asks of Omoi.

Only the payload fields Omoi uses are read, with the shapes of GitHub's webhook reference
("issues", "pull_request", "pull_request_review", "pull_request_review_comment",
"issue_comment"):
- an issue given the configured label becomes a ticket, with a deterministic id from the
  repository and the issue number, so the same issue never makes two tickets;
- a pull request from an `omoi/<ticket>` branch that is closed ends its ticket (merged: done;
  not merged: cancelled);
- a review asking for changes, a review comment, or a comment in the pull request's
  conversation becomes a follow-up task on the branch (never a bot's, nor one Omoi made:
  those carry its `<!-- omoi:` marker).
Everything else is acknowledged and ignored. `decide` is pure; the controller acts on it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from bus import constants as c
from schemas import PullRequestUpdate
from schemas.delivery import BRANCH_PREFIX, TicketSource
from schemas.ticket import TicketSubmission

_SAFE = re.compile(r"[^A-Za-z0-9_-]+")


class MalformedDelivery(ValueError):
    """A signed delivery whose payload is not what its event says it is."""


@dataclass(frozen=True)
class HookConfig:
    label: str
    clone_url: str
    workflow: str | None = None


@dataclass(frozen=True)
class Submit:
    ticket_id: str
    submission: TicketSubmission


@dataclass(frozen=True)
class Command:
    subject: str
    update: PullRequestUpdate


@dataclass(frozen=True)
class Ignore:
    reason: str


Decision = Submit | Command | Ignore


@dataclass
class RecentDeliveries:
    """The delivery ids this gateway took lately (GitHub redelivers with the same id), so a
    redelivery is answered without acting twice. Bounded; across gateways and restarts the
    deterministic ticket and task ids keep a repeat harmless."""

    limit: int = 10_000
    seen: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def first(self, delivery_id: str) -> bool:
        """Whether `delivery_id` is new, remembering it."""
        if delivery_id in self.seen:
            self.seen.move_to_end(delivery_id)
            return False
        self.seen[delivery_id] = None
        if len(self.seen) > self.limit:
            self.seen.popitem(last=False)
        return True

    def forget(self, delivery_id: str) -> None:
        """A delivery that could not be handed on: its redelivery should be tried."""
        self.seen.pop(delivery_id, None)


def signed(secret: str, body: bytes, signature: str | None) -> bool:
    """Whether `X-Hub-Signature-256` is the HMAC-SHA256 of the raw body under `secret`."""
    if not signature or not signature.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


class _Repository(BaseModel):
    full_name: str


class _Label(BaseModel):
    name: str


class _Issue(BaseModel):
    number: int
    title: str
    body: str | None = None
    html_url: str | None = None


class _IssuesEvent(BaseModel):
    action: str
    issue: _Issue
    label: _Label | None = None
    repository: _Repository


class _Ref(BaseModel):
    ref: str


class _Pull(BaseModel):
    number: int
    html_url: str | None = None
    merged: bool = False
    head: _Ref


class _User(BaseModel):
    login: str = ""
    type: str = "User"


class _Review(BaseModel):
    id: int
    body: str | None = None
    state: str = ""
    user: _User = _User()


class _Comment(BaseModel):
    id: int
    body: str = ""
    path: str | None = None
    line: int | None = None
    user: _User = _User()


class _IssueComment(BaseModel):
    id: int
    body: str = ""
    user: _User = _User()


class _CommentedIssue(_Issue):
    # Present (an object of URLs) when the issue is a pull request.
    pull_request: dict[str, Any] | None = None


class _IssueCommentEvent(BaseModel):
    action: str
    issue: _CommentedIssue
    comment: _IssueComment


# Omoi's pull requests are titled "<ticket title> (omoi <ticket id>)" (agents/delivery/body.py).
_OMOI_TITLE = re.compile(r"\(omoi ([A-Za-z0-9][A-Za-z0-9_.-]{0,63})\)\s*$")
OMOI_MARKER = "<!-- omoi:"


class _PullEvent(BaseModel):
    action: str
    pull_request: _Pull


class _ReviewEvent(_PullEvent):
    review: _Review


class _CommentEvent(_PullEvent):
    comment: _Comment


def ticket_id_for(repo: str, number: int) -> str:
    """`gh-<owner>-<name>-<number>`, within the id rules (a digest when too long)."""
    name = _SAFE.sub("-", repo.replace("/", "-")).strip("-")
    candidate = f"gh-{name}-{number}"
    if len(candidate) <= 64:
        return candidate
    return f"gh-{hashlib.sha256(repo.encode()).hexdigest()[:16]}-{number}"


def decide(event: str, body: bytes, config: HookConfig) -> Decision:
    """What a signed delivery of `event` asks for; MalformedDelivery if it is no such event."""
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise MalformedDelivery(f"the body is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise MalformedDelivery("the body is not a JSON object")
    try:
        if event == "ping":
            return Ignore("ping")
        if event == "issues":
            return _issue(_IssuesEvent.model_validate(payload), config)
        if event == "pull_request":
            return _closed(_PullEvent.model_validate(payload))
        if event == "pull_request_review":
            return _review(_ReviewEvent.model_validate(payload))
        if event == "pull_request_review_comment":
            return _comment(_CommentEvent.model_validate(payload))
        if event == "issue_comment":
            return _conversation(_IssueCommentEvent.model_validate(payload))
    except ValidationError as exc:
        raise MalformedDelivery(f"not a {event} event: {_first_error(exc)}") from None
    return Ignore(f"event {event!r} is not one Omoi acts on")


def _issue(hook: _IssuesEvent, config: HookConfig) -> Decision:
    if hook.action != "labeled" or hook.label is None or hook.label.name != config.label:
        return Ignore(f"issues.{hook.action} without the label {config.label!r}")
    repo = hook.repository.full_name
    ticket_id = ticket_id_for(repo, hook.issue.number)
    try:
        submission = TicketSubmission(
            id=ticket_id,
            title=hook.issue.title.strip()[:200] or f"{repo}#{hook.issue.number}",
            description=(hook.issue.body or "")[:50_000],
            workflow=config.workflow,
            repository=config.clone_url.format(repo=repo),
            source=TicketSource(
                provider="github", repo=repo, number=hook.issue.number, url=hook.issue.html_url
            ),
        )
    except ValidationError as exc:
        raise MalformedDelivery(f"the issue cannot be a ticket: {_first_error(exc)}") from None
    return Submit(ticket_id, submission)


def _ticket_of(pull: _Pull) -> str | None:
    ref = pull.head.ref
    return ref.removeprefix(BRANCH_PREFIX) if ref.startswith(BRANCH_PREFIX) else None


def _update(pull: _Pull, **fields: Any) -> Decision:
    ticket_id = _ticket_of(pull)
    if ticket_id is None:
        return Ignore(f"branch {pull.head.ref!r} is not an Omoi branch")
    update = PullRequestUpdate(ticket_id=ticket_id, number=pull.number, url=pull.html_url, **fields)
    return Command(c.CMD_TICKET_PULL_REQUEST, update)


def _closed(hook: _PullEvent) -> Decision:
    if hook.action != "closed":
        return Ignore(f"pull_request.{hook.action}")
    return _update(hook.pull_request, action="merged" if hook.pull_request.merged else "closed")


def _review(hook: _ReviewEvent) -> Decision:
    review = hook.review
    if hook.action != "submitted" or review.state.lower() == "approved" or not review.body:
        return Ignore("a review that asks for nothing")
    return _update(
        hook.pull_request,
        action="review",
        review_id=review.id,
        author=review.user.login,
        body=review.body[:20_000],
    )


def _comment(hook: _CommentEvent) -> Decision:
    comment = hook.comment
    if hook.action != "created" or not comment.body.strip():
        return Ignore(f"pull_request_review_comment.{hook.action}")
    where = f"On {comment.path}" + (f", line {comment.line}" if comment.line else "") + ":\n\n"
    return _update(
        hook.pull_request,
        action="review",
        review_id=comment.id,
        author=comment.user.login,
        body=(where if comment.path else "") + comment.body[:19_000],
    )


def _conversation(hook: _IssueCommentEvent) -> Decision:
    comment, issue = hook.comment, hook.issue
    if hook.action != "created" or issue.pull_request is None or not comment.body.strip():
        return Ignore(f"issue_comment.{hook.action} that asks for nothing")
    if comment.user.type == "Bot" or OMOI_MARKER in comment.body:
        return Ignore("a comment of a bot's, or Omoi's own")
    found = _OMOI_TITLE.search(issue.title)
    if found is None:
        return Ignore(f"pull request #{issue.number} is not one of Omoi's")
    update = PullRequestUpdate(
        ticket_id=found[1], number=issue.number, url=issue.html_url, action="review",
        review_id=comment.id, author=comment.user.login, body=comment.body[:20_000],
    )  # fmt: skip
    return Command(c.CMD_TICKET_PULL_REQUEST, update)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    return f"{where}: {err['msg']}"
