"""Ship a process's finished spans onto the bus: JSON objects (`schemas.span.SpanLine`), one
per line and many per message, on `omoi.spans.<role>.<agent-id>`, which OMOI_SPANS keeps
for the recorder. A message a span cost about as much CPU as making the span, in every
process and in the server; packed, tracing costs a few percent of a task's work.

It is an OpenTelemetry span processor, next to the OTLP exporter when there is one: `on_end`
runs where the span ended, so it only encodes the span and appends it to a
`bus.shipping.ShippingBuffer`; a task of the loop publishes.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

from bus.shipping import ShippingBuffer

if TYPE_CHECKING:
    from bus.bus import Bus

log = logging.getLogger(__name__)

# The attributes that say what a span is about: fields of their own on the wire.
TICKET_ATTRIBUTE = "omoi.ticket"
TASK_ATTRIBUTE = "omoi.task"
# A span is a timing with ids, not a payload: long values are cut.
MAX_ATTRIBUTE_CHARS = 1000
# Up to this much of spans a message (a span is ~500 bytes): well under the server's
# 1 MiB payload limit, and a small loss if a message is.
SPANS_PER_MESSAGE_BYTES = 64 * 1024

_STATUS = {StatusCode.UNSET: "unset", StatusCode.OK: "ok", StatusCode.ERROR: "error"}
_encode = msgspec.json.Encoder().encode


class SpanShipper(SpanProcessor):
    """Every span that ends in this process, shipped to `subject` (see the module)."""

    def __init__(
        self,
        bus: Bus | None,
        subject: str,
        *,
        max_buffered: int = 50_000,
        flush_s: float = 0.5,
        batch_bytes: int = SPANS_PER_MESSAGE_BYTES,
    ) -> None:
        self.buffer = ShippingBuffer(
            bus, subject, "spans", max_buffered=max_buffered, flush_s=flush_s,
            batch_bytes=batch_bytes,
        )  # fmt: skip

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        try:
            self.buffer.put(encode_span(span))
        except Exception:  # a processor never raises into the traced code
            log.debug("a span could not be shipped", exc_info=True)

    def shutdown(self) -> None:
        pass  # `stop` sends what is left, from the loop

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def start(self) -> None:
        self.buffer.start()

    async def stop(self) -> None:
        await self.buffer.stop()


def encode_span(span: ReadableSpan) -> bytes:
    ctx = span.context
    assert ctx is not None
    attributes: dict[str, object] = {}
    for name, value in (span.attributes or {}).items():
        if isinstance(value, str):
            attributes[name] = value[:MAX_ATTRIBUTE_CHARS]
        elif isinstance(value, bool | int | float):
            attributes[name] = value
        else:  # a sequence or a mapping
            attributes[name] = str(value)[:MAX_ATTRIBUTE_CHARS]
    ticket = attributes.pop(TICKET_ATTRIBUTE, None)
    task = attributes.pop(TASK_ATTRIBUTE, None)
    start = span.start_time or 0
    return _encode(
        {
            "trace_id": f"{ctx.trace_id:032x}",
            "span_id": f"{ctx.span_id:016x}",
            "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
            "name": span.name[:200],
            "kind": span.kind.name.lower(),
            "start": _time(start),
            "end": _time(span.end_time or start),
            "status": _STATUS[span.status.status_code],
            "status_message": span.status.description,
            "ticket": ticket,
            "task": task,
            "attributes": attributes,
        }
    )


def _time(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)
