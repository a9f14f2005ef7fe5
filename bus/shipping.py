"""Telemetry onto the bus without slowing whoever produces it: a bounded buffer that any
thread appends to and one task of the loop publishes from.

Log lines (`bus.log_shipper`) and spans (`bus.span_shipper`) go this way. With no server to
take them (a reconnect, an outage) items wait in the buffer; when it is full the oldest go,
and once there is room again a warning says how many were lost. They go out as plain
publishes, not JetStream ones: an item is not worth a round trip, and the stream stores it
all the same. Spans go several to a message (`batch_bytes`, one JSON object per line):
a span is cheaper to make than a message is to store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING

import nats.errors

if TYPE_CHECKING:
    from bus.bus import Bus

log = logging.getLogger(__name__)


class ShippingBuffer:
    """Items for `subject`, published every `flush_s` (see the module docstring).

    Args:
        bus: Where the items go; None until `attach` (items wait meanwhile).
        subject: The subject every item is published on.
        what: What an item is, plural, for the warning about dropped ones ("log lines").
        max_buffered: Items kept while none can be sent; past it the oldest are dropped.
        flush_s: How often gathered items are sent.
        batch_bytes: 0 sends an item a message; more packs items, a line each, into
            messages of up to this many bytes (an item longer than that goes alone).
    """

    def __init__(
        self,
        bus: Bus | None,
        subject: str,
        what: str,
        *,
        max_buffered: int = 50_000,
        flush_s: float = 0.2,
        batch_bytes: int = 0,
    ) -> None:
        self.subject = subject
        self.batch_bytes = batch_bytes
        self.what = what
        self.shipped = 0
        self.dropped = 0
        self._bus = bus
        self._items: deque[bytes] = deque()
        self._max_buffered = max_buffered
        self._flush_s = flush_s
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._reported_drops = 0

    def attach(self, bus: Bus) -> None:
        """Send over `bus` from now on: for a process that connects after it starts."""
        self._bus = bus

    def put(self, item: bytes) -> None:
        """Buffer one item; from any thread, never blocking."""
        # deque appends and pops are atomic: threads may add while the task sends.
        if len(self._items) >= self._max_buffered:
            with contextlib.suppress(IndexError):
                self._items.popleft()
                self.dropped += 1
        self._items.append(item)

    def start(self) -> None:
        """Send items from now on, from a task of the running loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"shipping {self.subject}")

    async def stop(self) -> None:
        """Send what is buffered (as far as the server takes it) and stop; safe twice."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            await task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._flush_s)
            await self.send()
            if self._stopping.is_set():
                if self._bus is not None:
                    with contextlib.suppress(nats.errors.Error, OSError):
                        await self._bus.nc.flush(timeout=2)
                return

    async def send(self) -> int:
        """Publish the buffered items now; the number sent. What the connection refuses
        (closed, or its reconnect buffer full) stays buffered for the next round."""
        sent = await self._drain()
        if self.dropped > self._reported_drops and not self._items:
            # Said once there is room again: said into a full buffer, the warning (a log
            # line itself, maybe) would push out one more item.
            lost, self._reported_drops = self.dropped - self._reported_drops, self.dropped
            log.warning("%d %s were dropped while no server took them", lost, self.what)
            sent += await self._drain()
        return sent

    async def _drain(self) -> int:
        sent = 0
        while self._items and self._bus is not None:
            items = self._take()
            try:
                await self._bus.nc.publish(self.subject, b"\n".join(items))
            except (nats.errors.Error, OSError):
                self._items.extendleft(reversed(items))
                break
            sent += len(items)
        self.shipped += sent
        return sent

    def _take(self) -> list[bytes]:
        """The next message's items: one, or as many as fit in `batch_bytes`."""
        items = [self._items.popleft()]
        size = len(items[0])
        while self._items and size + 1 + len(self._items[0]) <= self.batch_bytes:
            item = self._items.popleft()
            items.append(item)
            size += 1 + len(item)
        return items
