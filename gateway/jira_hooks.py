"""Jira webhook deliveries: an issue moved to the configured status becomes a ticket.

Jira Cloud's admin webhooks sign the raw body with the shared secret (HMAC-SHA256 in
`X-Hub-Signature`, `sha256=<hex>`, the same form as GitHub's) and name each delivery in
`X-Atlassian-Webhook-Identifier` (kept across Jira's retries). Only `jira:issue_updated`
(and `jira:issue_created` straight into the status) with the issue now in
`OMOI_JIRA_STATUS` makes a ticket, `jira-<KEY>`, so an issue makes one ticket however
often it comes back to that status. Descriptions may be plain text (API v2) or an
Atlassian Document (v3); both become text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from gateway.github_hooks import Ignore, MalformedDelivery, Submit
from schemas.delivery import TicketSource
from schemas.ticket import TicketSubmission

EVENTS = ("jira:issue_updated", "jira:issue_created")


@dataclass(frozen=True)
class JiraConfig:
    status: str
    # Where the work is cloned from and delivered to: `{project}` is the issue's project key.
    repository: str | None = None
    workflow: str | None = None
    site: str | None = None  # for links: https://<site>.atlassian.net


class _Status(BaseModel):
    name: str


class _Fields(BaseModel):
    summary: str = ""
    description: Any = None
    status: _Status


class _Issue(BaseModel):
    key: str
    fields: _Fields


class _Change(BaseModel):
    field: str = ""
    toString: str | None = None


class _Changelog(BaseModel):
    items: list[_Change] = []


class _Delivery(BaseModel):
    webhookEvent: str
    issue: _Issue
    changelog: _Changelog | None = None


def text_of(description: Any) -> str:
    """Plain text from a v2 string or a v3 Atlassian Document."""
    if description is None:
        return ""
    if isinstance(description, str):
        return description
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "text" and isinstance(node.get("text"), str):
                out.append(node["text"])
            for child in node.get("content", []) or []:
                walk(child)
            if node.get("type") in ("paragraph", "heading", "listItem"):
                out.append("\n")
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(description)
    return "".join(out).strip()


def decide(body: bytes, config: JiraConfig) -> Submit | Ignore:
    try:
        payload = json.loads(body)
        hook = _Delivery.model_validate(payload)
    except ValueError as exc:  # JSON and pydantic errors alike
        detail = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise MalformedDelivery(f"not a Jira issue event: {detail}") from None
    if hook.webhookEvent not in EVENTS:
        return Ignore(f"event {hook.webhookEvent!r} is not one Omoi acts on")
    status = hook.issue.fields.status.name
    moved = hook.webhookEvent == "jira:issue_created" or any(
        c.field == "status" for c in (hook.changelog.items if hook.changelog else [])
    )
    if status.casefold() != config.status.casefold() or not moved:
        return Ignore(f"{hook.issue.key} is not newly in {config.status!r}")
    key = hook.issue.key
    project = key.rsplit("-", 1)[0]
    url = f"{config.site.rstrip('/')}/browse/{key}" if config.site else None
    try:
        submission = TicketSubmission(
            id=f"jira-{key}",
            title=hook.issue.fields.summary.strip()[:200] or key,
            description=text_of(hook.issue.fields.description)[:50_000],
            workflow=config.workflow,
            repository=config.repository.format(project=project) if config.repository else None,
            source=TicketSource(provider="jira", key=key, url=url),
        )
    except ValidationError as exc:
        raise MalformedDelivery(f"the issue cannot be a ticket: {exc.errors()[0]['msg']}") from None
    return Submit(submission.id or key, submission)
