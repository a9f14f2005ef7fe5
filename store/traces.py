"""A ticket's trace from the `spans` view, laid out as a waterfall: each span under its
parent, siblings in start order, with its offset and length as fractions of the whole.
`omoi trace` prints it and the ticket page draws it; both take `Bar`s from here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bus.trace_context import ticket_trace_id

COLUMNS = (
    "span_id", "parent_id", "name", "role", "agent", "task", "at", "end_at", "duration_ms",
    "status", "status_message", "attributes",
)  # fmt: skip
# The attribute that says which one of several like-named spans this is (a task's name is
# a column of its own).
_DETAIL = ("omoi.check", "gen_ai.request.model")


def trace_query(ticket_id: str, limit: int = 2000) -> tuple[str, list[Any]]:
    """The spans of a ticket's trace, and the query's parameters."""
    columns = ", ".join(f'"{c}"' for c in COLUMNS)
    sql = f'SELECT {columns} FROM spans WHERE trace_id = ? ORDER BY "at" LIMIT {int(limit)}'
    return sql, [ticket_trace_id(ticket_id)]


@dataclass(frozen=True)
class Bar:
    span_id: str
    name: str
    detail: str
    role: str
    depth: int
    start_s: float  # from the trace's start
    duration_s: float
    offset: float  # 0..1 of the trace's length
    width: float  # 0..1
    failed: bool
    status_message: str | None


def waterfall(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[Bar]:
    """The spans as bars, depth-first: a span whose parent is not among them (the trace's
    root, or a child of a span still running) starts a tree of its own."""
    spans = [dict(zip(columns, row, strict=True)) for row in rows]
    if not spans:
        return []
    ids = {s["span_id"] for s in spans}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in spans:
        parent = span["parent_id"] if span["parent_id"] in ids else None
        children.setdefault(parent, []).append(span)
    for group in children.values():
        group.sort(key=lambda s: (s["at"], s["name"]))
    first: datetime = min(s["at"] for s in spans)
    last: datetime = max(s["end_at"] for s in spans)
    total = max((last - first).total_seconds(), 1e-6)
    bars: list[Bar] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in children.get(parent, []):
            start = (span["at"] - first).total_seconds()
            length = max((span["end_at"] - span["at"]).total_seconds(), 0.0)
            bars.append(
                Bar(
                    span_id=span["span_id"],
                    name=span["name"],
                    detail=_detail(span),
                    role=span["role"] or "",
                    depth=depth,
                    start_s=start,
                    duration_s=length,
                    offset=start / total,
                    width=length / total,
                    failed=span["status"] == "error",
                    status_message=span["status_message"],
                )
            )
            walk(span["span_id"], depth + 1)

    walk(None, 0)
    return bars


def _detail(span: dict[str, Any]) -> str:
    if span["task"] and span["name"] in ("task", "attempt"):
        return str(span["task"])
    attributes = span["attributes"]
    if isinstance(attributes, str):
        try:
            attributes = json.loads(attributes)
        except ValueError:
            attributes = {}
    for key in _DETAIL:
        value = (attributes or {}).get(key)
        if value and str(value) not in span["name"]:
            return str(value)
    return ""
