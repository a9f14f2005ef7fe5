"""A finished span as agents ship it: one JSON object on `omoi.spans.<role>.<agent-id>`.

The same spans go to an OTLP collector when one is configured; this is Omoi's own copy,
readable with `nats sub 'omoi.spans.>'` and kept in the store as the `spans` view.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from schemas.common import WireModel

TraceId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
SpanId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
AttributeValue = str | bool | int | float


class SpanStatus(StrEnum):
    UNSET = "unset"
    OK = "ok"
    ERROR = "error"


class SpanLine(WireModel):
    trace_id: TraceId
    span_id: SpanId
    parent_id: SpanId | None = None
    name: str = Field(min_length=1, max_length=200)
    kind: str = "internal"
    start: datetime
    end: datetime
    status: SpanStatus = SpanStatus.UNSET
    status_message: str | None = None
    # What the span is about, when it is about a ticket (most are).
    ticket: str | None = None
    task: str | None = None
    attributes: dict[str, AttributeValue] = Field(default_factory=dict)
