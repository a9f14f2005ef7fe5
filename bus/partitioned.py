"""The consumers of the partitions a process owns, started and stopped as ownership moves.

Each round of `Ownership` may gain partitions (their consumers start), lose them (their
consumers stop at once: another member may hold them already) or find some wanted for
another member. Those are stopped first, so the messages they hold are handled or handed
back, and only then released: the next owner never takes a partition whose messages are
still in hand here. Stopping runs beside the rounds, so a slow handler never delays the
renewal of the other leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from bus.consumer import Logger, Runtime, spawn
from bus.ownership import Ownership
from bus.retry import Outage

log = logging.getLogger(__name__)


class PartitionedConsumer:
    """Runs `consumer_of(p)` for each partition `p` it owns; the agent runs it like one
    consumer (`run`, `stop`, `started`)."""

    def __init__(
        self,
        ownership: Ownership,
        consumer_of: Callable[[int], Runtime],
        *,
        renew_s: float,
        on_gained: Callable[[set[int]], None] | None = None,
        logger: Logger | None = None,
    ) -> None:
        self.ownership = ownership
        self.consumer_of = consumer_of
        self.renew_s = renew_s
        self.on_gained = on_gained
        self.log = logger or log
        self.started = asyncio.Event()  # the first round is done (it may hold nothing)
        self.outage = Outage(f"owning {ownership.group} partitions", self.log)
        self._stopping = asyncio.Event()
        self._running: dict[int, tuple[Runtime, asyncio.Task[None]]] = {}
        self._leaving: dict[int, asyncio.Task[None]] = {}  # surplus being stopped

    @property
    def held(self) -> frozenset[int]:
        """The partitions whose consumers run here now."""
        return frozenset(self._running)

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        try:
            while not self._stopping.is_set():
                await self._round()
                self.started.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.renew_s)
        finally:
            await self._finish()

    async def _round(self) -> None:
        await self._release_stopped()
        try:
            gained, lost = await self.ownership.round()
        except Exception as exc:  # noqa: BLE001 - leases lapse; the consumers go on
            self.outage.failed(exc)
            return
        self.outage.ok()
        for partition in lost:
            self.log.warning("partition %d of %s lost its lease", partition, self.ownership.group)
            await self._stop(partition)
        for partition in self.ownership.surplus - self._leaving.keys():
            if partition in self._running:
                self._leaving[partition] = asyncio.ensure_future(self._stop(partition))
        for partition in self._ended():
            # Its consumer ended without being asked: free the partition for someone else.
            await self.ownership.release(partition)
        for partition in sorted(gained):
            self._start(partition)
        if gained:
            self.log.info(
                "%s partitions %s taken; holding %s",
                self.ownership.group, sorted(gained), sorted(self._running),
            )  # fmt: skip
            if self.on_gained is not None:
                self.on_gained(gained)

    def _start(self, partition: int) -> None:
        consumer = self.consumer_of(partition)
        self._running[partition] = (consumer, spawn(consumer.run(), self.log))

    async def _stop(self, partition: int) -> None:
        found = self._running.pop(partition, None)
        if found is None:
            return
        consumer, task = found
        consumer.stop()
        await asyncio.gather(task, return_exceptions=True)

    def _ended(self) -> list[int]:
        ended = [p for p, (_, task) in self._running.items() if task.done()]
        for partition in ended:
            self.log.error("consumer of partition %d ended on its own", partition)
            del self._running[partition]
        return ended

    async def _release_stopped(self) -> None:
        for partition, task in list(self._leaving.items()):
            if task.done():
                del self._leaving[partition]
                with contextlib.suppress(Exception):
                    await self.ownership.release(partition)

    async def _finish(self) -> None:
        """Stop every consumer (each hands back what it has not finished), then give the
        partitions up so the others take them at their next round, not after the TTL."""
        for consumer, _ in self._running.values():
            consumer.stop()
        tasks = [task for _, task in self._running.values()] + list(self._leaving.values())
        await asyncio.gather(*tasks, return_exceptions=True)
        self._running.clear()
        self._leaving.clear()
        try:
            await self.ownership.leave()
        except Exception as exc:  # noqa: BLE001 - the leases lapse by themselves
            self.log.warning("leaving the %s partitions: %r", self.ownership.group, exc)
