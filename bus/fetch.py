"""Pull one message at a time from several durable consumers.

A worker serving several (phase, capability) pairs holds one pull subscription per
pair. It long-polls them all at once and takes the first message; any extra message
that the other polls bring in meanwhile is handed straight back (nak) so another
worker can run it instead of it waiting behind the current task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

log = logging.getLogger(__name__)


class MultiFetcher:
    def __init__(
        self, subscriptions: list[JetStreamContext.PullSubscription], poll_s: float = 1.0
    ) -> None:
        self._subs = subscriptions
        self._poll_s = poll_s
        # Polls still open after the last `next()` returned; a subscription must not
        # have two fetches in flight, so the next call waits for these first.
        self._drain: asyncio.Task[None] | None = None

    async def _fetch(self, sub: JetStreamContext.PullSubscription) -> list[Msg]:
        try:
            return list(await sub.fetch(1, timeout=self._poll_s))
        except NatsTimeoutError:
            return []

    async def next(self) -> Msg | None:
        """The next message from any subscription, or None after one idle poll."""
        if self._drain is not None:
            await self._drain
            self._drain = None
        if len(self._subs) == 1:
            return await self._next_of_one()
        return await self._next_of_many()

    async def _next_of_many(self) -> Msg | None:
        pending = {asyncio.create_task(self._fetch(sub)) for sub in self._subs}
        chosen: Msg | None = None
        extras: list[Msg] = []
        try:
            while pending and chosen is None:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    for msg in task.result():
                        if chosen is None:
                            chosen = msg
                        else:
                            extras.append(msg)
        except BaseException:
            for task in pending:
                task.cancel()
            raise
        for msg in extras:
            await msg.nak()
        if pending:
            self._drain = asyncio.create_task(self._hand_back(pending))
        return chosen

    async def next_batch(self, n: int) -> list[Msg]:
        """One message, as a list (nats-py's batch fetch waits for a full batch or its
        timeout; `bus.batch.BatchPuller` is the way to take several)."""
        msg = await self.next()
        return [msg] if msg is not None else []

    async def _next_of_one(self) -> Msg | None:
        msgs = await self._fetch(self._subs[0])
        for extra in msgs[1:]:
            await extra.nak()
        return msgs[0] if msgs else None

    async def _hand_back(self, polls: set[asyncio.Task[list[Msg]]]) -> None:
        for poll in polls:
            try:
                msgs = await poll
            except Exception:
                log.debug("leftover poll failed", exc_info=True)
                continue
            for msg in msgs:
                await msg.nak()

    async def close(self) -> None:
        if self._drain is not None:
            with contextlib.suppress(Exception):
                await self._drain
            self._drain = None
