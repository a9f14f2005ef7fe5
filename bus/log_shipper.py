"""Ship a process's log lines onto the bus: one JSON object per message on
`omoi.logs.<role>.<agent-id>`, which OMOI_LOGS keeps for the recorder and `omoi logs`.

Logging must never slow or break the agent that logs: `emit` only formats the record and
appends it to a `bus.shipping.ShippingBuffer`, from any thread. The process's stderr keeps
every line, whatever the buffer had to drop.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from bus.shipping import ShippingBuffer
from bus.topology import LOG_LINE_MAX_BYTES

if TYPE_CHECKING:
    from bus.bus import Bus

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
        self.buffer = ShippingBuffer(
            bus, subject, "log lines", max_buffered=max_buffered, flush_s=flush_s
        )

    @property
    def shipped(self) -> int:
        return self.buffer.shipped

    @property
    def dropped(self) -> int:
        return self.buffer.dropped

    # logging.Handler

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record).encode()
            if len(line) > LOG_LINE_MAX_BYTES:
                line = _shortened(line)
        except Exception:  # noqa: BLE001 (a handler never raises into the code that logs)
            self.handleError(record)
            return
        self.buffer.put(line)

    # Lifecycle

    def start(self) -> None:
        """Send lines from now on, from a task of the running loop."""
        self.buffer.start()

    async def stop(self) -> None:
        """Send what is buffered (as far as the server takes it) and stop; safe twice."""
        await self.buffer.stop()

    async def send(self) -> int:
        """Publish the buffered lines now; the number sent."""
        return await self.buffer.send()


def _shortened(line: bytes) -> bytes:
    """The line with its long fields cut so that it fits one message."""
    fields = json.loads(line)
    budget = LOG_LINE_MAX_BYTES // (2 * len(_LONG_FIELDS))
    for name in _LONG_FIELDS:
        value = fields.get(name)
        if isinstance(value, str) and len(value) > budget:
            fields[name] = value[:budget] + f"… ({len(value) - budget} characters cut)"
    return json.dumps(fields, ensure_ascii=False).encode()
