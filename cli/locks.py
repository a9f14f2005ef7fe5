"""`omoi locks`: who holds which resource lock, until when, and which tasks wait for one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer
from rich.table import Table

from bus import Bus
from bus import constants as c
from schemas import TaskState, TaskStatus, TicketStatus, utcnow
from schemas.lock import LockHolder, LockState, ResourceClaim

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@dataclass(frozen=True)
class Waiter:
    task: str
    status: str
    resource: str
    mode: str
    key: str


async def read_locks(bus: Bus) -> tuple[list[LockState], list[Waiter]]:
    """Every lock with a live holder, and the unfinished tasks of running tickets whose
    claims conflict with one."""
    bucket = await bus.bucket(c.LOCKS_BUCKET, LockState)
    now = utcnow()
    held = []
    for lock in await bucket.values():
        live = [h for h in lock.holders if h.expires_at > now]
        if live:
            held.append(lock.model_copy(update={"holders": live}))
    waiters: list[Waiter] = []
    if not held:
        return held, waiters
    for ticket in await bus.tickets.values():
        if ticket.status is not TicketStatus.RUNNING:
            continue
        for name in ticket.tasks:
            task = await bus.tasks.value(f"{ticket.id}.{name}")
            if task is not None and task.status in (TaskStatus.BLOCKED, TaskStatus.QUEUED):
                waiters += _waits(task, held)
    return held, waiters


def _waits(task: TaskState, held: list[LockState]) -> list[Waiter]:
    return [
        Waiter(task.id, task.status.value, claim.name, claim.mode, lock.key)
        for claim in task.resources
        for lock in held
        if lock.key == claim.key(task.ticket_id) and _blocks(claim, lock.holders, task.id)
    ]


def _blocks(claim: ResourceClaim, holders: list[LockHolder], task_id: str) -> bool:
    return any(
        h.task != task_id and claim.conflicts(ResourceClaim(name=h.resource, mode=h.mode))
        for h in holders
    )


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
