"""Audit entries for what reaches the planner over NATS: submissions and commands.

The gateway audits the HTTP requests it forwards, with the token that made them; the
planner audits what it admits, rejects or carries out, whoever sent it (`via` nats). NATS
does not tell a receiver who published a message, so the actor is what the subject
proves: only the roles the permission table allows may publish on it.
"""

from __future__ import annotations

from bus import constants as c
from schemas.audit import AuditAction, AuditEntry, AuditOutcome, clip

_COMMANDS = {
    c.CMD_TICKET_CANCEL: AuditAction.TICKET_CANCEL,
    c.CMD_TICKET_MOVE: AuditAction.TICKET_MOVE,
    c.CMD_TASK_CANCEL: AuditAction.TASK_CANCEL,
    c.CMD_TICKET_PAUSE: AuditAction.TICKET_PAUSE,
    c.CMD_TICKET_RESUME: AuditAction.TICKET_RESUME,
    c.CMD_TICKET_PRIORITY: AuditAction.TICKET_PRIORITY,
    c.CMD_TICKET_DELIVER: AuditAction.TICKET_DELIVER,
    c.CMD_TICKET_PULL_REQUEST: AuditAction.TICKET_PULL_REQUEST,
    c.CMD_TICKET_DISCOVERY: AuditAction.TICKET_DISCOVERY,
}
# The commands the guardian may send too (it audits its own reasons beside them).
_GUARDIAN_COMMANDS = frozenset(
    {c.CMD_TASK_CANCEL, c.CMD_TICKET_PAUSE, c.CMD_TICKET_RESUME, c.CMD_TICKET_PRIORITY}
)


def _actor(subject: str) -> str:
    if subject in _GUARDIAN_COMMANDS:
        return "nats:operator|gateway|guardian"
    if subject == c.TRUSTED_SUBMIT_SUBJECT or subject in _COMMANDS:
        return "nats:operator|gateway"
    return "nats:submitter|operator|gateway"


def submission(
    subject: str, seq: int, ticket_id: str, outcome: AuditOutcome, detail: str = ""
) -> AuditEntry:
    """One per intake message (its stream sequence makes a redelivery the same entry)."""
    return AuditEntry(
        id=f"intake-{seq}",
        action=AuditAction.TICKET_SUBMIT,
        outcome=outcome,
        actor=_actor(subject),
        via="nats",
        source=subject,
        client="planner",
        target=ticket_id,
        detail=clip(detail),
    )


def command(subject: str, target: str, outcome: AuditOutcome, detail: str = "") -> AuditEntry:
    return AuditEntry(
        action=_COMMANDS[subject],
        outcome=outcome,
        actor=_actor(subject),
        via="nats",
        source=subject,
        client="planner",
        target=target,
        detail=clip(detail),
    )
