"""`omoi token create|list|revoke|link`: the gateway's API tokens, over NATS.

Tokens live hashed in `omoi_tokens` (key = token id); the token itself is printed once,
by `create`, alone on stdout (`TOKEN=$(omoi token create --role viewer)`). Making and
revoking one is audited as the NATS identity that did it (`nats:<role>`: the CLI's is
the operator's locally, `omoi up`'s the admin's).
"""

from __future__ import annotations

import getpass
import re
import socket
from pathlib import Path

from bus import Bucket, Bus
from bus import constants as c
from cli.client import ClientError
from cli.secret_files import ADMIN_TOKEN_FILE, auth_path, read_secret, write_secret
from schemas.audit import AuditAction, AuditEntry, AuditOutcome
from schemas.common import utcnow
from schemas.token import ApiToken, Role, mint, parse_token

# Who an audit entry names when the caller does not say: the CLI's local identity.
CLI_ACTOR = "nats:operator"
SIGN_IN_LINK_TTL_S = 15 * 60
_TTL_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> float:
    """`90`, `90s`, `15m`, `12h`, `30d` as seconds."""
    m = _TTL_RE.match(text.strip())
    if not m or float(m[1]) <= 0:
        raise ClientError(f"not a duration: {text!r} (try 3600, 15m, 12h or 30d)")
    return float(m[1]) * _UNITS[m[2]]


def cli_entry(
    action: AuditAction, target: str, detail: str = "", actor: str = CLI_ACTOR
) -> AuditEntry:
    return AuditEntry(
        action=action,
        outcome=AuditOutcome.OK,
        actor=actor,
        role=actor.removeprefix("nats:"),
        via="nats",
        source=f"{getpass.getuser()}@{socket.gethostname()}",
        client="omoi-cli",
        target=target,
        detail=detail,
    )


async def bucket(bus: Bus) -> Bucket[ApiToken]:
    return await bus.bucket(c.TOKENS_BUCKET, ApiToken)


async def create(
    bus: Bus,
    role: Role,
    name: str = "",
    *,
    ttl_s: float | None = None,
    signs_in_as: str | None = None,
    actor: str = CLI_ACTOR,
) -> tuple[str, ApiToken]:
    """A new token: stored (hashed) and audited; returns its text and record."""
    text, record = mint(role, name, created_by=actor, ttl_s=ttl_s, signs_in_as=signs_in_as)
    if not await (await bucket(bus)).create(record.id, record):
        raise ClientError(f"token id {record.id} is taken; try again")  # 36^12 ids: never
    what = "sign-in link" if signs_in_as else "token"
    detail = f"{what}, role {role}, name {name!r}" + (f", expires in {ttl_s:g} s" if ttl_s else "")
    await bus.publish_audit(cli_entry(AuditAction.TOKEN_CREATE, record.id, detail, actor))
    return text, record


async def listed(bus: Bus) -> list[ApiToken]:
    """Every API token, oldest first (sign-in links left out)."""
    found = [t for t in await (await bucket(bus)).values() if t.signs_in_as is None]
    return sorted(found, key=lambda t: (t.created_at, t.id))


async def revoke(bus: Bus, token_id: str, actor: str = CLI_ACTOR) -> ApiToken:
    tokens = await bucket(bus)
    record = await tokens.value(token_id)
    if record is None:
        raise ClientError(f"no token {token_id!r} (`omoi token list` shows them)")
    await tokens.delete(token_id)
    entry = cli_entry(AuditAction.TOKEN_REVOKE, token_id, f"role {record.role}", actor)
    await bus.publish_audit(entry)
    return record


async def valid(bus: Bus, text: str) -> ApiToken | None:
    """The record of token `text` if it is still good."""
    parsed = parse_token(text)
    if parsed is None:
        return None
    record = await (await bucket(bus)).value(parsed[0])
    return record if record and record.matches(text) and not record.expired() else None


async def sign_in_link(
    bus: Bus, admin: ApiToken, ttl_s: float = SIGN_IN_LINK_TTL_S, actor: str = CLI_ACTOR
) -> str:
    """A one-time link token that signs the dashboard in as `admin`. Links nobody used and
    that have expired are cleared out on the way."""
    tokens = await bucket(bus)
    now = utcnow()
    for old in await tokens.values():
        if old.signs_in_as is not None and old.expired(now):
            await tokens.delete(old.id)
    text, _ = await create(
        bus, admin.role, "sign-in link", ttl_s=ttl_s, signs_in_as=admin.id, actor=actor
    )
    return text


def local_admin_token(data_dir: Path) -> str | None:
    """The admin token `omoi up` keeps for the local user, if there is one."""
    return read_secret(auth_path(data_dir, ADMIN_TOKEN_FILE))


async def ensure_local_admin(bus: Bus, data_dir: Path, actor: str = CLI_ACTOR) -> ApiToken:
    """The local user's admin token (`<data-dir>/auth/gateway-admin.token`, 0600): the one
    there if it is still good, else a new one written there. What `omoi up` gives the local
    user, so the gateway's authentication never stands in their way."""
    path = auth_path(data_dir, ADMIN_TOKEN_FILE)
    text = read_secret(path)
    record = await valid(bus, text) if text else None
    if record is not None:
        return record
    text, record = await create(bus, Role.ADMIN, "omoi up: local admin", actor=actor)
    write_secret(path, text)
    return record
