"""Read a pull consumer a whole batch at a time, for agents that drain a stream.

nats-py's `fetch` waits for each message of a batch separately (a task, a timer and a
uuid per message), which capped the recorder near 12k events/s. Here the deliveries of
one pull request land in a plain list from a subscription callback, and a request is
done when the batch is full or the server says there is nothing more (a status message).
Deliveries that arrive after `fetch` returned are kept for the next call, never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus import constants as c

STATUS = "Status"
# The request was answered in full: nothing waiting (404), expired (408), or the server
# cut it short (409: e.g. consumer deleted or too many waiting requests).
_ENDS = frozenset({"404", "408", "409"})


class BatchPuller:
    """Pull requests for one durable consumer, their deliveries collected in a list.

    At most one request is open at a time, and it never asks for more than the caller
    said it can take, so a worker never holds messages it has no slot for.
    """

    def __init__(self, nc: Client, stream: str, durable: str) -> None:
        self._nc = nc
        self._subject = c.consumer_next_subject(stream, durable)
        self._inbox = ""
        self._sub: Subscription | None = None
        self._got: list[Msg] = []
        self._outstanding = 0  # deliveries the open request may still bring
        self._arrived = asyncio.Event()  # a delivery or the end of the open request
        self._ended = asyncio.Event()  # the open request will bring nothing more

    async def start(self) -> BatchPuller:
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg)
        return self

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def drain(self, batch: int, timeout: float = 1.0) -> list[Msg]:
        """Up to `batch` messages that are waiting now; an empty list if none are."""
        if not self._got and not self._outstanding:
            await self._request({"batch": batch, "no_wait": True}, batch)
            await self._settled(timeout)
        return self._take(batch)

    async def take(self, batch: int, timeout: float) -> list[Msg]:
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
            if not self._outstanding:
                expires = max(int((timeout - 0.01) * 1e9), 1_000_000)
                await self._request({"batch": batch, "expires": expires}, batch)
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout)
        return self._take(batch)

    async def _request(self, request: dict[str, object], batch: int) -> None:
        self._outstanding = batch
        self._arrived.clear()
        self._ended.clear()
        await self._nc.publish(self._subject, json.dumps(request).encode(), reply=self._inbox)

    async def _settled(self, timeout: float) -> None:
        """Wait until the open request has brought all it will."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended.wait(), timeout)

    def _take(self, batch: int) -> list[Msg]:
        out, self._got = self._got[:batch], self._got[batch:]
        return out

    async def _on_msg(self, msg: Msg) -> None:
        status = msg.headers.get(STATUS) if msg.headers else None
        if status is None:
            self._got.append(msg)
            self._arrived.set()
            if self._outstanding > 0:
                self._outstanding -= 1
                if not self._outstanding:
                    self._ended.set()
        elif status in _ENDS:
            self._outstanding = 0
            self._arrived.set()
            self._ended.set()


def stream_seq(msg: Msg) -> int:
    """The stream sequence of a JetStream delivery, read straight from its reply subject.

    `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>...` (9 tokens), or with the
    domain and account hash in front (12 tokens); `msg.metadata` parses every field.
    """
    tokens = msg.reply.split(".")
    return int(tokens[5] if len(tokens) == 9 else tokens[7])
