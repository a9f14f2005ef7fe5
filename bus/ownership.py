"""Partitions shared out among the live members of a group, by leases in a KV bucket.

Each member writes its member key, and the owner key of each partition it holds, once a
round. The bucket's TTL drops what nobody writes again, so a dead member's partitions are
free one TTL after its last round. From the same member list every member computes the
same wanted owner for each partition (`share`). It takes the free partitions wanted for
it, and gives up the ones wanted for another (the caller first stops using them).

The leases keep members out of each other's way; they are not what makes the work
correct. A member paused past its TTL may overlap with the next owner for a while: that
costs duplicate work, never wrong work, because the handlers are idempotent and every
state write is a compare-and-set.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence

from bus.state import Bucket, Versioned
from schemas.partition import PartitionLease

log = logging.getLogger(__name__)


def share(partitions: Sequence[int], members: Sequence[str]) -> dict[int, str]:
    """The wanted owner of each partition. Rendezvous hashing, capped so that every member
    is wanted for its fair share, rounded down or up. A member that joins or leaves moves
    few partitions, and all members compute the same answer from the same list."""
    if not members:
        return {}
    fair, extra = divmod(len(partitions), len(members))
    load = dict.fromkeys(members, 0)
    above = 0  # members holding fair + 1; at most `extra` may
    wanted: dict[int, str] = {}
    for partition in partitions:
        for member in sorted(members, key=lambda m: (_weight(m, partition), m), reverse=True):
            if load[member] < fair or (load[member] == fair and above < extra):
                above += load[member] == fair
                wanted[partition] = member
                load[member] += 1
                break
    return wanted


def _weight(member: str, partition: int) -> int:
    digest = hashlib.blake2b(f"{member}/{partition}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class Ownership:
    """One member's view of its group's partitions, moved on by `round()`."""

    def __init__(
        self,
        bucket: Bucket[PartitionLease],
        group: str,
        member: str,
        partitions: Sequence[int],
    ) -> None:
        self.bucket = bucket
        self.group = group
        self.member = member
        self.partitions = tuple(partitions)
        self.held: set[int] = set()
        self.wanted: dict[int, str] = {}
        self.members: list[str] = []

    def owner_key(self, partition: int) -> str:
        return f"{self.group}.owners.{partition}"

    def member_key(self, member: str) -> str:
        return f"{self.group}.members.{member}"

    @property
    def surplus(self) -> set[int]:
        """Held partitions wanted for another member: to stop using, then `release`."""
        return {p for p in self.held if self.wanted.get(p) != self.member}

    async def round(self) -> tuple[set[int], set[int]]:
        """Say it is alive, renew what it holds, take what is free and wanted for it.
        Returns the partitions gained and those lost (expired and taken meanwhile)."""
        await self.bucket.put(self.member_key(self.member), PartitionLease(holder=self.member))
        self.members = await self._live_members()
        self.wanted = share(self.partitions, self.members)
        # Each step's requests go out at once: a round is a few round trips, not dozens.
        read = await asyncio.gather(*(self.bucket.read(self.owner_key(p)) for p in self.partitions))
        owners = dict(zip(self.partitions, read, strict=True))
        mine = sorted(self.held)
        renewed = await asyncio.gather(*(self._renew(p, owners[p]) for p in mine))
        lost = {p for p, ok in zip(mine, renewed, strict=True) if not ok}
        self.held -= lost
        free = [
            p
            for p in self.partitions
            if p not in self.held and self.wanted.get(p) == self.member and owners[p] is None
        ]
        taken = await asyncio.gather(
            *(
                self.bucket.create(self.owner_key(p), PartitionLease(holder=self.member))
                for p in free
            )
        )
        gained = {p for p, ok in zip(free, taken, strict=True) if ok}
        self.held |= gained
        return gained, lost

    async def _renew(self, partition: int, current: Versioned[PartitionLease] | None) -> bool:
        """Write its lease again; False if the partition is not its own any more."""
        if current is None:
            # Expired before this round (a long pause): take it again unless another did.
            return await self.bucket.create(
                self.owner_key(partition), PartitionLease(holder=self.member)
            )

        def renewed(lease: PartitionLease) -> PartitionLease | None:
            return PartitionLease(holder=self.member) if lease.holder == self.member else None

        written = await self.bucket.update_versioned(
            self.owner_key(partition), renewed, known=current
        )
        return written is not None

    async def _live_members(self) -> list[str]:
        prefix = self.member_key("")
        names = {k[len(prefix) :] for k in await self.bucket.keys() if k.startswith(prefix)}
        others = sorted(names - {self.member})
        # A member that left keeps a delete marker until the TTL drops it.
        found = await asyncio.gather(*(self.bucket.value(self.member_key(n)) for n in others))
        return sorted({self.member, *(n for n, v in zip(others, found, strict=True) if v)})

    async def release(self, partition: int) -> None:
        """Give a held partition up, for its wanted owner to take at its next round."""
        if partition not in self.held:
            return
        self.held.discard(partition)
        current = await self.bucket.read(self.owner_key(partition))
        if current is not None and current.value.holder == self.member:
            await self.bucket.delete(self.owner_key(partition))

    async def leave(self) -> None:
        """Release everything and stop being a member (a graceful shutdown)."""
        await asyncio.gather(*(self.release(p) for p in sorted(self.held)))
        await self.bucket.delete(self.member_key(self.member))
