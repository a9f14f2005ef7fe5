"""What nats-server itself refused, as audit entries: failed authentications and the
publishes and subscriptions a role's permissions denied.

NATS tells a client, not the other clients, that it was refused; the server logs it. The
embedded server's log is read line by line (`EmbeddedNatsServer(on_log=…)`), and each such
line becomes an entry here: a pure function of the line and the known identities.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from bus.audit import AuditTrail
from schemas.audit import AuditAction, AuditEntry, AuditOutcome, clip

log = logging.getLogger(__name__)

_ADDRESS = r"\[ERR\] (?P<address>\S+) - cid:\d+ - "
_AUTH_FAILURE = re.compile(
    _ADDRESS + r'(?:"[^"]*" - )?authentication error(?: - \w+ "(?P<key>[^"]+)")?'
)
_VIOLATION = re.compile(
    _ADDRESS
    + r'(?:"(?P<client>[^"]*)" - )?"[^"/]*/(?:nkey:)?(?P<key>[^"]+)" - '
    + r'(?P<kind>Publish|Subscription) Violation - Subject "(?P<subject>[^"]+)"'
)


def from_server_log(line: str, roles: Mapping[str, str]) -> AuditEntry | None:
    """The audit entry for a server log line, or None. `roles`: public key -> role."""
    if match := _AUTH_FAILURE.search(line):
        key = match["key"]
        who = f"nats:{roles[key]}" if key in roles else (f"nkey:{key}" if key else "anonymous")
        return AuditEntry(
            action=AuditAction.AUTH_FAILURE,
            outcome=AuditOutcome.DENIED,
            actor=who,
            via="nats",
            source=match["address"],
            client="nats-server",
            detail="the server refused the credentials (none, unknown or rotated away)",
        )
    if match := _VIOLATION.search(line):
        role = roles.get(match["key"])
        kind = "publish to" if match["kind"] == "Publish" else "subscribe to"
        return AuditEntry(
            action=AuditAction.AUTH_DENIED,
            outcome=AuditOutcome.DENIED,
            actor=f"nats:{role}" if role else f"nkey:{match['key']}",
            role=role,
            via="nats",
            source=match["address"],
            client=match["client"] or "",
            target=clip(match["subject"], 200),
            detail=f"the permissions of {role or 'this identity'} do not allow it to {kind} this",
        )
    return None


class ServerRefusals:
    """A server's `on_log` that records what it refused into an audit trail, once one is
    attached (the trail needs a connection to the server whose log this is)."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        # role -> public key, as `AuthDir.public_keys()` gives them.
        self.roles = {key: role for role, key in keys.items()}
        self.trail: AuditTrail | None = None

    def __call__(self, line: str) -> None:
        entry = from_server_log(line, self.roles)
        if entry is None:
            return
        if self.trail is None:
            log.warning("not audited (no connection yet): %s by %s", entry.action, entry.actor)
            return
        # A client retrying bad credentials, or a loop hitting a denial, is one entry a second.
        self.trail.record(entry, fold=True)
