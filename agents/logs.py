"""How a process writes its log: text for people at a terminal, JSON lines for machines.

Both carry the same context (agent, subject, ticket, task, trace id): from a record's
`extra` (`AgentLog` puts the agent there) or from `bus.log_context`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from agents.redact import RedactingFilter, Redactor
from bus import constants as c
from bus.log_context import FIELDS, log_fields
from bus.log_shipper import LogShipper

if TYPE_CHECKING:
    from bus.bus import Bus

LogFormat = Literal["text", "json"]
# Anything a record's context holds that JSON has no type for is written as its str().
_encode = msgspec.json.Encoder(enc_hook=str).encode


def context_of(record: logging.LogRecord) -> dict[str, str]:
    fields = dict(log_fields())
    attrs = record.__dict__
    for name in FIELDS:
        value = attrs.get(name)
        if value and isinstance(value, str):
            fields[name] = value
    return fields


_TEXT_SKIPS = ("subject", "trace_id", "span_id")


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: [agent] message (ticket=… task=…)`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        fields = context_of(record)
        line = super().formatMessage(record)
        agent = fields.pop("agent", None)
        if agent:
            head, sep, message = line.partition(": ")
            line = f"{head}{sep}[{agent}] {message}"
        # Long ids a person reads past; the JSON lines (and the store) keep them.
        for name in _TEXT_SKIPS:
            fields.pop(name, None)
        if fields:
            line += " (" + " ".join(f"{k}={v}" for k, v in fields.items()) + ")"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `ts`, `level`, `logger`, `message`, the context fields,
    and `exc` with the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="microseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **context_of(record),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        # msgspec: a shipped process formats every line, and it is several times json's speed.
        return _encode(line).decode()


def configure_logging(level: str = "INFO", fmt: LogFormat = "text") -> None:
    """Log to stderr in `fmt`; calling it again replaces the earlier configuration."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("nats").setLevel(logging.WARNING)


@asynccontextmanager
async def shipped_logs(
    bus: Bus, role: str, agent_id: str, redactor: Redactor | None = None, **options: Any
) -> AsyncIterator[LogShipper]:
    """Every line the process logs inside the block also goes to the bus as JSON (see
    `bus.log_shipper`; `options` are its), redacted as stderr's lines are; leaving the
    block sends what is left."""
    shipper = LogShipper(bus, c.log_subject(role, agent_id), JsonFormatter(), **options)
    if redactor:
        shipper.addFilter(RedactingFilter(redactor))
    root = logging.getLogger()
    root.addHandler(shipper)
    shipper.start()
    try:
        yield shipper
    finally:
        await shipper.stop()
        root.removeHandler(shipper)
