"""HTTP API tokens: roles, the stored record (`omoi_tokens`, key = token id) and the token text.

A token reads `omoi_<id>_<secret>`: the id is public (it names the record, appears in
audit entries and in `omoi token list`), the secret is 32 random bytes, URL-safe base64.
Only a SHA-256 digest of the whole token is stored. A plain digest is enough for a
secret of 256 random bits: there is nothing to guess, so no slow hash is needed, and
checking a token stays a dictionary lookup and one digest.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import Field

from schemas.common import WireModel, utcnow

TOKEN_PREFIX = "omoi"
SECRET_BYTES = 32
ID_CHARS = 12
TOKEN_ID_PATTERN = rf"^[a-z0-9]{{{ID_CHARS}}}$"
_TOKEN_RE = re.compile(rf"{TOKEN_PREFIX}_([a-z0-9]{{{ID_CHARS}}})_([A-Za-z0-9_-]{{43}})")
MAX_NAME = 200
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


class Role(StrEnum):
    """Each role may do what the ones before it may."""

    VIEWER = "viewer"
    SUBMITTER = "submitter"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return ROLE_ORDER.index(self)

    def at_least(self, other: Role) -> bool:
        return self.rank >= other.rank


ROLE_ORDER: tuple[Role, ...] = (Role.VIEWER, Role.SUBMITTER, Role.OPERATOR, Role.ADMIN)


class ApiToken(WireModel):
    """What `omoi_tokens` holds for one token. Revoking deletes the key."""

    id: str = Field(pattern=TOKEN_ID_PATTERN)
    role: Role
    name: str = Field(default="", max_length=MAX_NAME)
    created_at: datetime = Field(default_factory=utcnow)
    created_by: str = ""
    expires_at: datetime | None = None
    # A sign-in link: good for one dashboard sign-in as `signs_in_as`, never as a bearer.
    signs_in_as: str | None = None
    used_at: datetime | None = None
    hash: str = Field(description="sha256 hex digest of the whole token text")

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and (now or utcnow()) >= self.expires_at

    def matches(self, token: str) -> bool:
        return hmac.compare_digest(self.hash, token_hash(token))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_token(text: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token, else None."""
    m = _TOKEN_RE.fullmatch(text)
    return (m[1], m[2]) if m else None


def mint(
    role: Role,
    name: str = "",
    *,
    created_by: str = "",
    ttl_s: float | None = None,
    signs_in_as: str | None = None,
    now: datetime | None = None,
) -> tuple[str, ApiToken]:
    """A new token's text (shown once) and the record to store for it."""
    token_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(ID_CHARS))
    token = f"{TOKEN_PREFIX}_{token_id}_{secrets.token_urlsafe(SECRET_BYTES)}"
    created = now or utcnow()
    record = ApiToken(
        id=token_id,
        role=role,
        name=name,
        created_at=created,
        created_by=created_by,
        expires_at=created + timedelta(seconds=ttl_s) if ttl_s else None,
        signs_in_as=signs_in_as,
        hash=token_hash(token),
    )
    return token, record
