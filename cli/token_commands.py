"""The `omoi token` commands (the work is in `cli.tokens`)."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.table import Table

from agents.settings import Settings
from bus import Bus
from cli import tokens
from cli.client import ClientError
from schemas.token import ApiToken, Role

token_app = typer.Typer(
    no_args_is_help=True, help="HTTP API tokens for the gateway (stored hashed, in omoi_tokens)."
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _actor() -> str:
    """Who the audit entry names: the NATS identity the command connects as."""
    from cli.app import identity

    credentials = identity("operator")
    return f"nats:{credentials.role}" if credentials else "nats:anonymous"


def _shown(record: ApiToken) -> dict[str, object]:
    return record.model_dump(mode="json", exclude={"hash", "used_at", "signs_in_as"})


@token_app.command("create")
def token_create(
    role: Annotated[
        Role, typer.Option(help="What it may do (each role includes the ones before).")
    ],
    name: Annotated[str, typer.Option(help="What it is for, for `omoi token list`.")] = "",
    ttl: Annotated[
        str | None, typer.Option(help="Expires after this long: 3600, 15m, 12h, 30d.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Make a token and print it, once (only its hash is kept)."""
    from cli.app import emit_json, err, run

    try:
        ttl_s = tokens.parse_ttl(ttl) if ttl else None
    except ClientError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None

    actor = _actor()

    async def go(bus: Bus) -> tuple[str, ApiToken]:
        return await tokens.create(bus, role, name, ttl_s=ttl_s, actor=actor)

    text, record = run(go)
    if as_json:
        emit_json({"token": text, **_shown(record)})
        return
    sys.stdout.write(text + "\n")
    err.print(
        f"token {record.id} ({record.role}); shown only now. "
        f"Use it as `Authorization: Bearer …`; revoke it with `omoi token revoke {record.id}`.",
        markup=False,
    )


@token_app.command("list")
def token_list(as_json: JsonFlag = False) -> None:
    """Every token: id, role, name, when it was made and when it expires (never a secret)."""
    from cli.app import emit_json, out, run

    found = run(tokens.listed)
    if as_json:
        emit_json([_shown(t) for t in found])
        return
    table = Table("id", "role", "name", "created", "by", "expires")
    for t in found:
        expires = t.expires_at.isoformat(timespec="seconds") if t.expires_at else ""
        created = t.created_at.isoformat(timespec="seconds")
        table.add_row(t.id, t.role.value, t.name, created, t.created_by, expires)
    out.print(table)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (`omoi token list`).")],
    as_json: JsonFlag = False,
) -> None:
    """Revoke a token: every gateway refuses it (and ends its sessions) within a second."""
    from cli.app import emit_json, out, run

    actor = _actor()
    record = run(lambda bus: tokens.revoke(bus, token_id, actor))
    if as_json:
        emit_json(_shown(record))
    else:
        out.print(f"revoked {record.id} ({record.role} {record.name!r})", markup=False)


@token_app.command("link")
def token_link() -> None:
    """A one-time dashboard sign-in link (15 minutes) for the local admin of `omoi up`."""
    from cli import state
    from cli.app import err, run

    settings = Settings.from_env(os.environ)
    admin_text = tokens.local_admin_token(settings.data_dir)
    if admin_text is None:
        err.print(f"[red]error:[/] no admin token in {settings.data_dir}/auth; run `omoi up`")
        raise typer.Exit(1)

    async def go(bus: Bus) -> str:
        admin = await tokens.valid(bus, admin_text)
        if admin is None:
            raise ClientError("the local admin token is revoked; `omoi up` makes a new one")
        return await tokens.sign_in_link(bus, admin, actor=actor)

    actor = _actor()
    text = run(go)
    running = state.running(settings.data_dir)
    base = running.http_url if running and running.http_url else ""
    sys.stdout.write(f"{base}/login/link?token={text}\n")
