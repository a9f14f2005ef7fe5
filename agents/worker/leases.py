"""A worker's resource locks in `omoi_locks`: taken before a task runs, renewed while it
runs, checked before its work is committed, and given back once its outcome is stored.

Each lock key is changed only by compare-and-set, so two workers never both think they
hold a conflicting claim. A holder's lease runs out `lock_ttl_s` after its last renewal:
a worker that died (or lost NATS for that long) loses its locks, and its task, delivered
again, takes them with a new fencing token. The old attempt, should it still be alive,
finds its token gone when it tries to commit, and its work is refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from itertools import groupby

from bus import Bus
from bus import constants as c
from bus.state import Bucket
from schemas import TaskState, utcnow
from schemas.lock import LockHolder, LockState, ResourceClaim

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lease:
    """The claims of one task held under one lock key, with their fencing token."""

    key: str
    task: str
    token: int


@dataclass(frozen=True)
class Busy:
    """Why a task's claims cannot be had now: who holds what."""

    key: str
    holders: list[LockHolder]

    def describe(self) -> str:
        held = ", ".join(f"{h.resource} ({h.mode}) by {h.task}" for h in self.holders)
        return f"{self.key} is held: {held}"


class Leases:
    def __init__(self, bus: Bus, worker_id: str, ttl_s: float) -> None:
        self.bus = bus
        self.worker_id = worker_id
        self.ttl = timedelta(seconds=ttl_s)
        self._bucket: Bucket[LockState] | None = None

    async def bucket(self) -> Bucket[LockState]:
        if self._bucket is None:
            self._bucket = await self.bus.bucket(c.LOCKS_BUCKET, LockState)
        return self._bucket

    async def acquire(self, task: TaskState) -> list[Lease] | Busy:
        """Every lock the task's claims need, or what stands in the way (then none)."""
        if not task.resources:
            return []
        bucket = await self.bucket()
        taken: list[Lease] = []
        claims = sorted(task.resources, key=lambda r: r.key(task.ticket_id))
        for key, group in groupby(claims, key=lambda r: r.key(task.ticket_id)):
            mine = list(group)
            busy: list[LockHolder] = []
            token = 0

            def take(lock: LockState, mine: list[ResourceClaim] = mine) -> LockState | None:
                nonlocal busy, token
                now = utcnow()
                lock.holders = [h for h in lock.holders if h.expires_at > now]
                busy = [
                    h for h in lock.holders if any(claim.conflicts(held_claim(h)) for claim in mine)
                ]
                if busy:
                    return None
                lock.fence += 1
                token = lock.fence
                lock.holders += [
                    LockHolder(task=task.id, worker=self.worker_id, resource=claim.name,
                               mode=claim.mode, token=token, expires_at=now + self.ttl)
                    for claim in mine
                ]  # fmt: skip
                return lock

            await bucket.create(key, LockState(key=key))
            if await bucket.update(key, take) is None:
                await self.release(taken)
                return Busy(key, busy)
            taken.append(Lease(key, task.id, token))
        log.debug("%s holds %s", task.id, ", ".join(f"{t.key}#{t.token}" for t in taken))
        return taken

    async def renew(self, leases: list[Lease]) -> list[Lease]:
        """Push the leases' expiry out; the ones found lost (expired and taken over)."""
        lost = []
        bucket = await self.bucket()
        for lease in leases:
            found = False

            def extend(lock: LockState, lease: Lease = lease) -> LockState | None:
                nonlocal found
                ours = [h for h in lock.holders if (h.task, h.token) == (lease.task, lease.token)]
                found = bool(ours)
                if not ours:
                    return None
                expires = utcnow() + self.ttl
                for h in ours:
                    h.expires_at = expires
                return lock

            await bucket.update(lease.key, extend)
            if not found:
                lost.append(lease)
        return lost

    async def lost(self, leases: list[Lease]) -> list[Lease]:
        """The leases no longer held: gone, or run out (so anyone may take them now)."""
        if not leases:
            return []
        bucket = await self.bucket()
        now = utcnow()
        out = []
        for lease in leases:
            lock = await bucket.value(lease.key)
            held = lock is not None and any(
                (h.task, h.token) == (lease.task, lease.token) and h.expires_at > now
                for h in lock.holders
            )
            if not held:
                out.append(lease)
        return out

    async def release(self, leases: list[Lease]) -> None:
        if not leases:
            return
        bucket = await self.bucket()
        for lease in leases:

            def drop(lock: LockState, lease: Lease = lease) -> LockState | None:
                kept = [h for h in lock.holders if (h.task, h.token) != (lease.task, lease.token)]
                if len(kept) == len(lock.holders):
                    return None
                lock.holders = kept
                return lock

            await bucket.update(lease.key, drop)


def held_claim(holder: LockHolder) -> ResourceClaim:
    return ResourceClaim(name=holder.resource, mode=holder.mode)
