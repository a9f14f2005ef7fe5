"""`omoi locks`: who holds which resource lock, until when, and which tasks wait for one."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from bus.locks import read_locks
from schemas import utcnow

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def locks_cmd(as_json: JsonFlag = False) -> None:
    """Resource locks: holders with their lease and fencing token, and waiting tasks."""
    from cli.app import emit_json, out, run

    held, waiters = run(read_locks)
    now = utcnow()
    if as_json:
        emit_json({
            "locks": [lock.model_dump(mode="json") for lock in held],
            "waiting": [w.__dict__ for w in waiters],
        })  # fmt: skip
        return
    table = Table(title="resource locks")
    for column in ("lock", "resource", "mode", "holder", "worker", "token", "lease left"):
        table.add_column(column)
    for lock in held:
        for h in lock.holders:
            left = f"{(h.expires_at - now).total_seconds():.0f}s"
            table.add_row(lock.key, h.resource, h.mode, h.task, h.worker, str(h.token), left)
    out.print(table if held else "no locks held")
    if waiters:
        waiting = Table(title="waiting")
        for column in ("task", "status", "resource", "mode", "lock"):
            waiting.add_column(column)
        for w in waiters:
            waiting.add_row(w.task, w.status, w.resource, w.mode, w.key)
        out.print(waiting)
