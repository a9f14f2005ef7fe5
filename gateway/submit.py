"""Submissions and commands over request/reply, and what their answers mean in HTTP.

The planner is the authority: the gateway validates with the very same code first (so a
bad body fails fast and with field-level detail), then asks the planner and maps its
`Reply` onto a status code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid

from pydantic import BaseModel

from agents.errors import InvalidTicket
from agents.planner.intake import parse_submission
from agents.spans import work_span
from bus import Bus, NoAnswer, streams
from bus import constants as c
from bus.trace_context import ticket_span_id
from gateway.models import Accepted, CommandResult
from gateway.problems import ApiProblem
from schemas import Reply
from schemas.common import ID_RE

log = logging.getLogger(__name__)

# Intake categories (agents.planner.intake and the planner's duplicate check) -> HTTP.
_INTAKE_STATUS = {
    "payload_too_large": 413,
    "malformed_json": 400,
    "duplicate_id": 409,
    # Shell or gate commands, or a local repository, from a client without that right.
    "forbidden": 403,
}
# Command categories (agents.planner.commands) -> HTTP.
_COMMAND_STATUS = {
    "not_found": 404,
    "already_finished": 409,
    "invalid_transition": 409,
    "conflict": 409,
    "invalid_command": 422,
    # The planner itself failed: not the client's fault, and not ours either.
    "internal": 502,
}


def ticket_id_for_key(key: str) -> str:
    """An Idempotency-Key as a ticket id: itself when it is a valid id, else a digest of it."""
    if ID_RE.match(key):
        return key
    return "T-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def new_ticket_id() -> str:
    # A plain POST is not idempotent: two identical bodies are two tickets (like the CLI).
    return "T-" + uuid.uuid4().hex[:12]


def prepare(raw: bytes, idempotency_key: str | None, max_bytes: int) -> tuple[str, bytes]:
    """Validate like the planner does and pin the ticket id; returns (id, bytes to send)."""
    try:
        submission = parse_submission(raw, max_bytes)
    except InvalidTicket as exc:
        raise _intake_problem(exc.category, exc.message, None) from exc
    if submission.id is not None:
        return submission.id, raw
    ticket_id = ticket_id_for_key(idempotency_key) if idempotency_key else new_ticket_id()
    body = json.loads(raw)
    body["id"] = ticket_id
    # Compact and UTF-8, so pinning the id grows the payload as little as possible.
    return ticket_id, json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _intake_problem(category: str, message: str, ticket_id: str | None) -> ApiProblem:
    status = _INTAKE_STATUS.get(category, 422)
    return ApiProblem(
        status,
        category.replace("_", "-"),
        message,
        title="Ticket rejected",
        category=category,
        ticket_id=ticket_id,
    )


async def submit(
    bus: Bus, ticket_id: str, payload: bytes, timeout: float, *, trusted: bool = False
) -> Accepted:
    """`trusted` submits on the trusted intake subject: the ticket may carry shell
    commands, gate commands and a local repository (agents/planner/rights.py). The route
    sets it from the token's role (`gateway.auth.trusted`); a caller that forgets gets
    the plain subject, never more rights."""
    subject = c.TRUSTED_SUBMIT_SUBJECT if trusted else c.SUBMIT_SUBJECT
    try:
        with work_span("submit", ticket=ticket_id, parent=ticket_span_id(ticket_id)):
            answer = await bus.request(subject, payload, timeout=timeout, ticket_id=ticket_id)
    except NoAnswer:
        # The intake stream captures the subject, so with the topology in place the
        # submission is durable: a planner will take it when one runs.
        if await streams.provisioned(bus):
            log.warning("no planner answered for %s; left in the intake stream", ticket_id)
            return Accepted(
                ticket_id=ticket_id,
                status="stored",
                message="no planner answered yet; it will be processed when one runs",
            )
        raise ApiProblem(503, "no-planner", "no Omoi topology on this NATS server") from None
    reply = Reply.model_validate_json(answer)
    if not reply.ok:
        error = reply.error
        category = error.category if error else "invalid_ticket"
        raise _intake_problem(category, error.message if error else "rejected", ticket_id)
    return Accepted(ticket_id=reply.ticket_id or ticket_id, status="accepted", message="accepted")


async def command(bus: Bus, subject: str, body: BaseModel, timeout: float) -> CommandResult:
    try:
        answer = await bus.request(
            subject,
            body.model_dump_json().encode(),
            timeout=timeout,
            ticket_id=getattr(body, "ticket_id", None),
        )
    except NoAnswer:
        raise ApiProblem(
            503, "no-planner", "no planner answered; is a planner running?", headers=_retry()
        ) from None
    reply = Reply.model_validate_json(answer)
    if reply.ok:
        return CommandResult(
            ticket_id=reply.ticket_id, task_id=reply.task_id, message=reply.message
        )
    category = reply.error.category if reply.error else "internal"
    message = reply.error.message if reply.error else "the planner refused"
    raise ApiProblem(
        _COMMAND_STATUS.get(category, 422),
        category.replace("_", "-"),
        message,
        title="Command refused",
        category=category,
    )


def _retry() -> dict[str, str]:
    return {"Retry-After": "5"}
