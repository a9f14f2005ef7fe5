"""Audit entries: who did (or tried) what, from where, to what, and how it ended.

Published on `omoi.audit.<action>` (stream `OMOI_AUDIT`, append-only) by whoever decided
the outcome: the gateway for HTTP requests, the CLI for tokens it makes, the planner for
submissions that arrive over NATS. The recorder copies them into the `audit_log` view.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import Field

from schemas.common import WireModel, utcnow

MAX_DETAIL = 1000


class AuditAction(StrEnum):
    TICKET_SUBMIT = "ticket.submit"
    TICKET_CANCEL = "ticket.cancel"
    TICKET_MOVE = "ticket.move"
    TASK_CANCEL = "task.cancel"
    TICKET_PAUSE = "ticket.pause"
    TICKET_RESUME = "ticket.resume"
    TICKET_PRIORITY = "ticket.priority"
    TICKET_DELIVER = "ticket.deliver"
    TICKET_PULL_REQUEST = "ticket.pull_request"
    TICKET_DISCOVERY = "ticket.discovery"
    # A provider's webhook delivery (GitHub), whatever became of it.
    WEBHOOK = "webhook"
    MEMORY_FORGET = "memory.forget"
    # The guardian acting on its own authority, and operators approving or undoing that.
    INTERVENTION = "guardian.intervene"
    INTERVENTION_APPROVE = "guardian.approve"
    INTERVENTION_UNDO = "guardian.undo"
    TOKEN_CREATE = "token.create"
    TOKEN_REVOKE = "token.revoke"
    # A missing, malformed, unknown, expired or revoked credential.
    AUTH_FAILURE = "auth.failure"
    # A valid credential whose role is too low for what it asked.
    AUTH_DENIED = "auth.denied"
    SIGN_IN = "session.sign_in"
    RATE_LIMITED = "rate_limit.hit"


class AuditOutcome(StrEnum):
    OK = "ok"
    # Refused by Omoi's rules (the planner rejected it, 4xx).
    REJECTED = "rejected"
    # Refused for who asked (401, 403, 429).
    DENIED = "denied"
    # Could not be carried out (NATS or the planner failed, 5xx).
    ERROR = "error"


def new_entry_id() -> str:
    return uuid.uuid4().hex


class AuditEntry(WireModel):
    """One audit entry. `id` doubles as the message id, so a retried publish is stored once."""

    id: str = Field(default_factory=new_entry_id)
    at: datetime = Field(default_factory=utcnow)
    action: AuditAction
    outcome: AuditOutcome
    # `token:<id>` for an HTTP token, `nats:<role>` for a NATS identity, `anonymous`.
    actor: str
    role: str | None = None
    # `http` (through the gateway) or `nats` (a client of the bus itself).
    via: str = "http"
    # The client's address (HTTP) or `user@host` (CLI).
    source: str = ""
    # What the client says it is: a User-Agent, `omoi-cli`.
    client: str = ""
    # What was acted on: a ticket id, `<ticket>.<task>`, a token id, a path.
    target: str = ""
    status: int | None = None
    detail: str = Field(default="", max_length=MAX_DETAIL)
    # Identical entries within a moment (a flood of 401s or 429s) are sent once, with the
    # number they stand for.
    count: int = Field(default=1, ge=1)


def clip(text: str, limit: int = MAX_DETAIL) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
