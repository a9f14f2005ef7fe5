"""Ship a process's log lines onto the bus: one JSON object per message on
`omoi.logs.<role>.<agent-id>`, which OMOI_LOGS keeps for the recorder and `omoi logs`.

Logging must never slow or break the agent that logs: `emit` only formats the record and
appends it to a bounded buffer, from any thread; a task publishes what has gathered every
`flush_s`. With no server to take them (a reconnect, an outage), lines wait in the buffer;
when it is full the oldest go, and the next line shipped says how many were lost. The
process's stderr keeps every line either way.

Lines go out as plain publishes, not JetStream ones: a log line is not worth a round trip,
and the stream stores it all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from typing import TYPE_CHECKING

import nats.errors

from bus.topology import LOG_LINE_MAX_BYTES

if TYPE_CHECKING:
    from bus.bus import Bus

log = logging.getLogger(__name__)

# The fields a line too long for one message loses most of (the rest are short ids).
_LONG_FIELDS = ("message", "exc", "stack")


class LogShipper(logging.Handler):
    """A logging handler whose lines reach `subject` (see the module docstring).

    Args:
        bus: Where the lines go.
        subject: `constants.log_subject(role, agent_id)`.
        formatter: Makes one JSON object of a record (`agents.logs.JsonFormatter`).
        max_buffered: Lines kept while none can be sent; past it the oldest are dropped.
        flush_s: How often gathered lines are sent.
    """

    def __init__(
        self,
        bus: Bus,
        subject: str,
        formatter: logging.Formatter,
        *,
        max_buffered: int = 50_000,
        flush_s: float = 0.2,
    ) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self.subject = subject
        self.shipped = 0
        self.dropped = 0
        self._bus = bus
        self._lines: deque[bytes] = deque()
        self._max_buffered = max_buffered
        self._flush_s = flush_s
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._reported_drops = 0

    # logging.Handler

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record).encode()
            if len(line) > LOG_LINE_MAX_BYTES:
                line = _shortened(line)
        except Exception:  # noqa: BLE001 (a handler never raises into the code that logs)
            self.handleError(record)
            return
        # deque appends and pops are atomic: threads may log while the task sends.
        if len(self._lines) >= self._max_buffered:
            with contextlib.suppress(IndexError):
                self._lines.popleft()
                self.dropped += 1
        self._lines.append(line)

    # Lifecycle

    def start(self) -> None:
        """Send lines from now on, from a task of the running loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"log shipper {self.subject}")

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
                with contextlib.suppress(nats.errors.Error, OSError):
                    await self._bus.nc.flush(timeout=2)
                return

    async def send(self) -> int:
        """Publish the buffered lines now; the number sent. What the connection refuses
        (closed, or its reconnect buffer full) stays buffered for the next round."""
        sent = await self._drain()
        if self.dropped > self._reported_drops and not self._lines:
            # Said once there is room again: said into a full buffer, it would push out
            # one more line.
            lost, self._reported_drops = self.dropped - self._reported_drops, self.dropped
            log.warning("%d log lines were dropped while no server took them", lost)
            sent += await self._drain()
        return sent

    async def _drain(self) -> int:
        sent = 0
        while self._lines:
            line = self._lines.popleft()
            try:
                await self._bus.nc.publish(self.subject, line)
            except (nats.errors.Error, OSError):
                self._lines.appendleft(line)
                break
            sent += 1
        self.shipped += sent
        return sent


def _shortened(line: bytes) -> bytes:
    """The line with its long fields cut so that it fits one message."""
    fields = json.loads(line)
    budget = LOG_LINE_MAX_BYTES // (2 * len(_LONG_FIELDS))
    for name in _LONG_FIELDS:
        value = fields.get(name)
        if isinstance(value, str) and len(value) > budget:
            fields[name] = value[:budget] + f"… ({len(value) - budget} characters cut)"
    return json.dumps(fields, ensure_ascii=False).encode()
