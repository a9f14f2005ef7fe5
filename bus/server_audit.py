"""What nats-server itself refused, as audit entries: failed authentications and the
publishes and subscriptions a role's permissions denied. Pure functions of what the
servers say, and the known identities.

A refused connection is announced by every server of a cluster in its system account
(`$SYS.SERVER.<id>.CLIENT.AUTH.ERR`, heard by the monitor as `system`: `bus.server_events`).
A denied publish or subscription is told only to the client that tried it, and logged;
the embedded server's log is read line by line (`EmbeddedNatsServer(on_log=…)`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from bus.audit import AuditTrail
from bus.errors import BusError
from schemas.audit import AuditAction, AuditEntry, AuditOutcome, clip

log = logging.getLogger(__name__)

_VIOLATION = re.compile(
    r"\[ERR\] (?P<address>\S+) - cid:\d+ - "
    + r'(?:"(?P<client>[^"]*)" - )?"[^"/]*/(?:nkey:)?(?P<key>[^"]+)" - '
    + r'(?P<kind>Publish|Subscription) Violation - Subject "(?P<subject>[^"]+)"'
)
_AUTH_ERROR = "io.nats.server.advisory.v1.client_disconnect"


class BadAdvisory(BusError):
    """A system-account message that is not the refused-connection advisory it should be."""


def from_auth_advisory(payload: bytes) -> AuditEntry:
    """The audit entry for a server's refused-connection advisory. Its id is the
    advisory's, so two listeners store it once."""
    try:
        advisory = json.loads(payload)
        kind = advisory.get("type")
        client: dict[str, Any] = advisory.get("client") or {}
        server: dict[str, Any] = advisory.get("server") or {}
        advisory_id = str(advisory["id"])
        if not isinstance(client, dict) or not isinstance(server, dict):
            raise TypeError("its client and server must be objects")
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise BadAdvisory(f"unreadable advisory: {exc!r}") from None
    if kind != _AUTH_ERROR:
        raise BadAdvisory(f"not a refused-connection advisory: {kind!r}")
    user = str(client.get("user") or "")
    if user.startswith("U") and len(user) == 56:
        actor = f"nkey:{user}"  # a key the server does not know (none of ours, or rotated away)
    else:
        actor = f"user:{clip(user, 64)}" if user else "anonymous"
    name = str(client.get("name") or "")
    lang = " ".join(str(client.get(k) or "") for k in ("lang", "ver")).strip()
    return AuditEntry(
        id=f"nats-auth-{clip(advisory_id, 64)}",
        action=AuditAction.AUTH_FAILURE,
        outcome=AuditOutcome.DENIED,
        actor=actor,
        via="nats",
        source=clip(str(client.get("host") or ""), 200),
        client=clip(f"{name} ({lang})" if name and lang else name or lang, 200),
        target=clip(str(server.get("name") or server.get("id") or ""), 200),
        detail=clip(
            f"the server refused the credentials (none, unknown or rotated away): "
            f"{advisory.get('reason') or 'authentication failure'}"
        ),
    )


def from_server_log(line: str, roles: Mapping[str, str]) -> AuditEntry | None:
    """The audit entry for a server log line, or None. `roles`: public key -> role."""
    match = _VIOLATION.search(line)
    if match is None:
        return None
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
        # A loop hitting a denial is one entry a second.
        self.trail.record(entry, fold=True)
