"""Reading resource locks: who holds which lock in `omoi_locks`, and who waits for one.

One reading for `omoi locks` and the dashboard; the locks themselves are taken and given
back by workers (`agents/worker/leases.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from bus import constants as c
from bus.bus import Bus
from schemas import TaskState, TaskStatus, TicketStatus, utcnow
from schemas.lock import LockHolder, LockState, ResourceClaim


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
    held = await _held(bus)
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


async def ticket_locks(bus: Bus, ticket_id: str) -> list[tuple[str, LockHolder]]:
    """The live holders of any lock that are tasks of `ticket_id`, with the lock's key."""
    held = await _held(bus)
    prefix = f"{ticket_id}."
    return [(lock.key, h) for lock in held for h in lock.holders if h.task.startswith(prefix)]


async def _held(bus: Bus) -> list[LockState]:
    """Every lock with a live holder, only its live holders."""
    bucket = await bus.bucket(c.LOCKS_BUCKET, LockState)
    now = utcnow()
    held = []
    for lock in await bucket.values():
        live = [h for h in lock.holders if h.expires_at > now]
        if live:
            held.append(lock.model_copy(update={"holders": live}))
    return held
