"""Whole batches of an ack-all consumer to one handler: how the recorder reads streams.

A batch is settled by acking its last delivery once the handler returned (the consumer
acks `all`, so that one ack settles the batch: a third of the recorder's time was acks).
The next batch is fetched while the handler works on this one. An ack-all ack also
covers deliveries a failed or crashed reader never stored, so after a failure, and at
start when anything is pending, the consumer is recreated just after its ack floor:
those deliveries come again instead of being acked unseen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING

from nats.js.api import ConsumerConfig

from bus.consumer import Logger, Runtime, Source
from bus.delivery import Delivery
from bus.puller import Puller
from bus.retry import backoff
from bus.settle import ack
from bus.topology import reset_to_ack_floor

if TYPE_CHECKING:
    from bus.bus import Bus

BatchHandler = Callable[[list[Delivery]], Awaitable[None]]


class BatchConsumer(Runtime):
    def __init__(
        self,
        bus: Bus,
        source: Source,
        handler: BatchHandler,
        *,
        config: ConsumerConfig,
        name: str,
        batch: int,
        poll_s: float = 1.0,
        grace_s: float = 10.0,
        logger: Logger | None = None,
    ) -> None:
        super().__init__(
            bus, [source], name=name, poll_s=poll_s, grace_s=grace_s, keep_alive_s=None,
            logger=logger,
        )  # fmt: skip
        self.source = source
        self.handler = handler
        self.config = config
        self.batch = batch
        self._failures = 0

    async def run(self) -> None:
        if await self._bus.patience.run(self._reset, f"resetting {self.name}"):
            self.log.info("%s: reading again what a previous reader left unacked", self.name)
        await super().run()

    async def _reset(self) -> bool:
        return await reset_to_ack_floor(self._bus.admin, self.source.stream, self.config)

    async def _loop(self) -> None:
        handling: asyncio.Task[None] | None = None
        try:
            while not self.stopping:
                take = partial(self.pullers[0].take_or_wait, self.batch, self.poll_s)
                msgs = await self.fetched(take)
                if handling is not None:
                    done, handling = handling, None
                    if not await self._succeeded(done):
                        await self._recover()
                        continue  # what was just fetched comes again after the reset
                if msgs:
                    deliveries = [self.delivery(m) for m in msgs]
                    handling = self.start_handling(deliveries, self._handle(deliveries))
        finally:
            if handling is not None:
                await self._succeeded(handling)

    async def _handle(self, deliveries: list[Delivery]) -> None:
        await self.handler(deliveries)
        await ack(deliveries[-1])

    async def _succeeded(self, handling: asyncio.Task[None]) -> bool:
        try:
            await handling
        except Exception:
            self.log.exception("handling a batch of %s failed; it will be read again", self.name)
            return False
        self._failures = 0
        return True

    async def _recover(self) -> None:
        """Start over after the ack floor with a fresh pull subscription, so nothing the
        failed batch or the one fetched behind it held is acked by a later batch."""
        self._failures += 1
        await self.wait(backoff(self._failures, first=0.5, cap=10.0))
        for puller in self.pullers:
            await puller.stop()
        await self._bus.patience.run(self._reset, f"resetting {self.name}")
        self.pullers = [
            await Puller(self._bus.nc, self.source.stream, self.source.durable, self._wake).start()
        ]
