"""Pull requests for one durable consumer, their deliveries collected in a list.

nats-py's `fetch` waits for each message of a batch separately (a task, a timer and a
uuid per message), which capped the recorder near 12k events/s, and its batch fetch holds
a lone message until the batch is full or the poll expires. Here the deliveries of a pull
request land in a plain list from a subscription callback, and a request is over when
its batch is full, the server says it brought all it will (a status message), or its
deadline passed: a request whose consumer leader died is never answered, and waiting
for it would stall the consumer for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus import constants as c
from bus.delivery import pending_after
from bus.errors import Unavailable

log = logging.getLogger(__name__)

STATUS = "Status"
# The request was answered in full: nothing waiting (404), expired (408), cut short (409:
# leadership change, consumer deleted, too many waiting requests) or no leader (503).
_ENDS = frozenset({"404", "408", "409", "503"})
# How long past its own expiry an unanswered request is still waited for.
_DEADLINE_SLACK_S = 0.5


class Puller:
    """At most one open request at a time, never asking for more than the caller said it
    can take, so a worker holds no messages it has no slot for."""

    def __init__(
        self,
        nc: Client,
        stream: str,
        durable: str,
        arrived: asyncio.Event | None = None,
        rank: int = 0,
    ) -> None:
        self.stream = stream
        self.durable = durable
        self.rank = rank  # taken from before lower ranks (bus.consumer.Source)
        self._nc = nc
        self._subject = c.consumer_next_subject(stream, durable)
        self._inbox = ""
        self._sub: Subscription | None = None
        self._got: list[Msg] = []
        self._outstanding = 0  # deliveries the open request may still bring
        self._deadline = 0.0
        self._loop = asyncio.get_running_loop()
        # Set on every delivery and when a request ends (so a waiter asks again at once);
        # may be shared by several pullers (one worker, many consumers).
        self.arrived = arrived or asyncio.Event()
        self._ended = asyncio.Event()  # the open request will bring nothing more
        # The last request found no leader for the consumer (or no consumer).
        self._unavailable = False
        # Messages the consumer had left after its last delivery to us: where to look first.
        self.pending = 0

    async def start(self) -> Puller:
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg)
        return self

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    @property
    def open(self) -> bool:
        """A request is out that may still bring messages."""
        if self._outstanding and self._loop.time() > self._deadline:
            log.debug("pull request on %s went unanswered; giving up on it", self.durable)
            self._outstanding = 0
            self._ended.set()
        return self._outstanding > 0

    @property
    def buffered(self) -> int:
        return len(self._got)

    def take(self, batch: int) -> list[Msg]:
        out, self._got = self._got[:batch], self._got[batch:]
        return out

    def check(self) -> None:
        """Raise `Unavailable` if the last request found the consumer without a leader."""
        if self._unavailable:
            self._unavailable = False
            raise Unavailable(f"no leader for consumer {self.durable} on {self.stream}")

    async def drain(self, batch: int, timeout: float = 1.0) -> list[Msg]:
        """Up to `batch` messages that are waiting now; an empty list if none are."""
        if not self._got and not self.open:
            await self.request(batch, no_wait=True, lifetime_s=timeout)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ended.wait(), timeout)
        got = self.take(batch)
        if not got:
            self.check()
        return got

    async def take_or_wait(self, batch: int, timeout: float) -> list[Msg]:
        """What is waiting now, up to `batch`; if nothing is, the first to arrive (and
        whatever came with it) within `timeout`. Bursts come in whole batches; a lone
        message is not held back waiting for company."""
        return await self.drain(batch, timeout) or await self.next_batch(batch, timeout)

    async def next_batch(self, batch: int, timeout: float) -> list[Msg]:
        """Up to `batch` messages, returning as soon as there is one (or after `timeout`).

        The request stays open for the rest of its batch; what it brings later is
        returned by the next calls.
        """
        if not self._got:
            if not self.open:
                await self.request(batch, no_wait=False, lifetime_s=timeout)
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), timeout)
        got = self.take(batch)
        if not got:
            self.check()
        return got

    async def request(self, batch: int, *, no_wait: bool, lifetime_s: float) -> None:
        """Ask for up to `batch` messages: those waiting now (`no_wait`), or the next ones
        to arrive within `lifetime_s`."""
        body: dict[str, object] = {"batch": batch}
        if no_wait:
            body["no_wait"] = True
        else:
            body["expires"] = max(int((lifetime_s - 0.01) * 1e9), 1_000_000)
        self._outstanding = batch
        self._deadline = self._loop.time() + lifetime_s + _DEADLINE_SLACK_S
        self._ended.clear()
        self._unavailable = False
        await self._nc.publish(self._subject, json.dumps(body).encode(), reply=self._inbox)

    async def _on_msg(self, msg: Msg) -> None:
        status = msg.headers.get(STATUS) if msg.headers else None
        if status is None:
            self.pending = pending_after(msg.reply)
            self._got.append(msg)
            self.arrived.set()
            if self._outstanding > 0:
                self._outstanding -= 1
                if not self._outstanding:
                    self._ended.set()
        elif status in _ENDS:
            if status in ("409", "503"):
                log.debug("pull on %s ended: %s %s", self.durable, status, msg.headers)
            self._unavailable = status == "503"
            if status == "404":
                self.pending = 0
            self._outstanding = 0
            self._ended.set()
            self.arrived.set()
