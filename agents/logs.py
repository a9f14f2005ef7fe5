"""How a process writes its log: text for people at a terminal, JSON lines for machines.

Both carry the same context (agent, subject, ticket, task, trace id): from a record's
`extra` (`AgentLog` puts the agent there) or from `bus.log_context`.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

from bus.log_context import FIELDS, log_fields

LogFormat = Literal["text", "json"]


def context_of(record: logging.LogRecord) -> dict[str, str]:
    fields = dict(log_fields())
    for name in FIELDS:
        value = record.__dict__.get(name)
        if isinstance(value, str) and value:
            fields[name] = value
    return fields


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
        fields.pop("subject", None)  # long, and the message names it where it matters
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
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(level: str = "INFO", fmt: LogFormat = "text") -> None:
    """Log to stderr in `fmt`; calling it again replaces the earlier configuration."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("nats").setLevel(logging.WARNING)
