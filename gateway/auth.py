"""Who is asking: bearer tokens and the dashboard's session cookie, checked from memory.

The gateway keeps `omoi_tokens` as a watched in-memory copy (`Bus.watch_bucket`), so a
check is a dictionary lookup and one SHA-256, with no round trip; a revoked token leaves
the copy within moments of its key being deleted. A token id the copy does not know may be
one made a moment ago: the guard of a protected route reads it from the server once more
(`read=True`), after the rate limits, so unknown tokens cannot make every request of a
flood (or of a probe) cost a round trip.

A session cookie names a token and is signed with the gateway's session key over the
token's stored hash: revoking the token ends its sessions too, and gateways that share
the key accept each other's sessions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Literal

from bus import Bucket
from schemas.common import utcnow
from schemas.token import ApiToken, Role, parse_token

Via = Literal["bearer", "session"]
FailureKind = Literal["missing", "malformed", "unknown", "expired", "oversized", "unavailable"]

BEARER = "bearer "
SESSION_COOKIE = "omoi_session"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a token, by its id and role."""

    token_id: str
    role: Role
    name: str
    via: Via

    @property
    def actor(self) -> str:
        return f"token:{self.token_id}"


@dataclass(frozen=True)
class AuthFailure:
    """Why the credentials a request carried were not accepted."""

    kind: FailureKind
    detail: str


MISSING = AuthFailure(
    "missing", "this needs an API token: send `Authorization: Bearer omoi_<id>_<secret>`"
)
UNAVAILABLE = AuthFailure("unavailable", "tokens cannot be checked: not connected to NATS (yet)")


def trusted(principal: Principal | None) -> bool:
    """Whether a submission by `principal` may carry shell commands, gate commands or a
    local repository (issue 11, part 5): operators and admins only."""
    return principal is not None and principal.role.at_least(Role.OPERATOR)


async def check_bearer(
    tokens: Bucket[ApiToken] | None, header: str, *, read: bool = False
) -> Principal | AuthFailure:
    """The principal an `Authorization` header value names, or why it names none."""
    if header[: len(BEARER)].lower() != BEARER:
        return AuthFailure("malformed", "the Authorization header must be `Bearer <token>`")
    return await check_token(tokens, header[len(BEARER) :].strip(), via="bearer", read=read)


async def check_token(
    tokens: Bucket[ApiToken] | None, text: str, *, via: Via, read: bool = False
) -> Principal | AuthFailure:
    """`read`: ask the server about an id the copy does not know (else it is unknown)."""
    parsed = parse_token(text)
    if parsed is None:
        return AuthFailure("malformed", "not an Omoi token (they read omoi_<id>_<secret>)")
    if tokens is None:
        return UNAVAILABLE
    record = await (known(tokens, parsed[0]) if read else tokens.get_cached(parsed[0]))
    if record is None or not record.matches(text):
        return AuthFailure("unknown", f"token {parsed[0]} is unknown or revoked")
    if record.signs_in_as is not None:
        return AuthFailure("malformed", f"token {record.id} is a sign-in link, not an API token")
    if record.expired():
        return AuthFailure("expired", f"token {record.id} expired at {record.expires_at}")
    return Principal(record.id, record.role, record.name, via)


async def known(tokens: Bucket[ApiToken], token_id: str) -> ApiToken | None:
    found = await tokens.get_cached(token_id)
    # A miss may be a token created a moment ago that the watch has not brought yet.
    return found if found is not None else await tokens.value(token_id)


@dataclass(frozen=True)
class SessionCodec:
    """Session cookie values: `<token id>.<expiry, unix s>.<signature>`."""

    key: bytes
    ttl_s: float

    def issue(self, record: ApiToken, now: float | None = None) -> str:
        expires = int((now or time.time()) + self.ttl_s)
        return f"{record.id}.{expires}.{self._sign(record, expires)}"

    async def check(
        self, tokens: Bucket[ApiToken] | None, value: str, now: float | None = None
    ) -> Principal | AuthFailure:
        parts = value.split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            return AuthFailure("malformed", "the session cookie is not one this gateway made")
        token_id, expires = parts[0], int(parts[1])
        if tokens is None:
            return UNAVAILABLE
        if expires <= (now or time.time()):
            return AuthFailure("expired", "the session has expired; sign in again")
        record = await tokens.get_cached(token_id)
        if record is None or not hmac.compare_digest(parts[2], self._sign(record, expires)):
            return AuthFailure("unknown", "the session's token is unknown or revoked")
        if record.expired(utcnow()):
            return AuthFailure("expired", f"token {record.id} expired at {record.expires_at}")
        return Principal(record.id, record.role, record.name, "session")

    def _sign(self, record: ApiToken, expires: int) -> str:
        message = f"{record.id}.{expires}.{record.hash}".encode()
        digest = hmac.new(self.key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
