"""Spans as the store keeps them: one row per span id, from OMOI_SPANS."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
from pydantic import ValidationError

from bus import constants as c
from schemas.span import SpanLine
from store.errors import StoreError

_TS = pa.timestamp("us", tz="UTC")
_SPAN_SCHEMA = pa.schema(
    [
        ("span_id", pa.string()),
        ("trace_id", pa.string()),
        ("parent_id", pa.string()),
        ("name", pa.string()),
        ("kind", pa.string()),
        ("role", pa.string()),
        ("agent", pa.string()),
        ("ticket_id", pa.string()),
        ("task", pa.string()),
        ("at", _TS),
        ("end_at", _TS),
        ("duration_ms", pa.float64()),
        ("status", pa.string()),
        ("status_message", pa.string()),
        ("attributes", pa.string()),
        ("stream_seq", pa.int64()),
    ]
)
SPAN_COLUMNS: tuple[str, ...] = tuple(_SPAN_SCHEMA.names)
_SPANS_PREFIX = c.SPANS_SUBJECTS.removesuffix(">")


@dataclass(frozen=True, slots=True)
class SpanRow:
    """One finished span. `role` and `agent` come from the subject it was shipped on
    (`omoi.spans.<role>.<agent>`), which the server lets a process use under its own role
    only. A span recorded twice (a ticket's own spans, after a redelivery) has one id and
    is stored once."""

    span_id: str
    trace_id: str
    parent_id: str | None
    name: str
    kind: str
    role: str | None
    agent: str | None
    ticket_id: str | None
    task: str | None
    at: datetime
    end_at: datetime
    duration_ms: float
    status: str
    status_message: str | None
    attributes: str
    stream_seq: int

    @classmethod
    def from_message(cls, subject: str, raw: bytes, stream_seq: int) -> SpanRow:
        """Parse a shipped span; raises StoreError if it is not one."""
        try:
            span = SpanLine.model_validate_json(raw)
        except ValidationError as exc:
            raise StoreError(f"not a span (stream seq {stream_seq}): {exc}") from exc
        role, _, agent = subject.removeprefix(_SPANS_PREFIX).partition(".")
        return cls(
            span_id=span.span_id,
            trace_id=span.trace_id,
            parent_id=span.parent_id,
            name=span.name,
            kind=span.kind,
            role=role or None,
            agent=agent or None,
            ticket_id=span.ticket,
            task=span.task,
            at=span.start,
            end_at=span.end,
            duration_ms=round((span.end - span.start).total_seconds() * 1000, 3),
            status=span.status.value,
            status_message=span.status_message,
            attributes=json.dumps(span.attributes, separators=(",", ":")),
            stream_seq=stream_seq,
        )


def spans_table(rows: Sequence[SpanRow]) -> pa.Table:
    return pa.Table.from_pydict(
        {name: [getattr(row, name) for row in rows] for name in _SPAN_SCHEMA.names},
        schema=_SPAN_SCHEMA,
    )
