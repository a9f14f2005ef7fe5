"""A ticket's trace for its page: the store's `spans` view as an SVG waterfall.

The same `Bar`s `omoi trace` prints (store/traces.py), drawn one row per span. Like the
charts and the logs, it is a view onto the store: no reader, no `spans` view yet or a
reader that fails all end in an empty section, never in a failed page.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from html import escape

from markupsafe import Markup

from gateway.sql import SqlError, SqlReader
from store.traces import Bar, trace_query, waterfall

log = logging.getLogger(__name__)

_ROW = 20
_LABEL_W = 260
_TIME_W = 70
_INDENT = 12


async def ticket_trace(reader: SqlReader | None, ticket_id: str, limit: int) -> list[Bar]:
    if reader is None:
        return []
    sql, params = trace_query(ticket_id, limit)
    try:
        result = await asyncio.to_thread(reader.query, sql, params, max_rows=limit)
    except SqlError as exc:
        log.info("no trace for ticket %s: %s", ticket_id, exc)
        return []
    return waterfall(result.columns, result.rows)


def waterfall_svg(bars: Sequence[Bar], *, title: str, width: int = 960) -> Markup:
    """One row per span: its name indented under its parent, a bar at its offset, and its
    duration; hovering a bar names the process and, for a failed span, why."""
    plot_w = width - _LABEL_W - _TIME_W
    height = _ROW * max(len(bars), 1) + 4
    parts = [
        f'<svg class="waterfall" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for i, bar in enumerate(bars):
        y = i * _ROW + 2
        x = _LABEL_W + bar.offset * plot_w
        w = max(bar.width * plot_w, 1.5)
        state = "failed" if bar.failed else "ok"
        name = f"{bar.name} {bar.detail}".strip()
        why = f" · {bar.status_message}" if bar.failed and bar.status_message else ""
        tip = f"{name} · {bar.role} · {bar.duration_s:.3f}s from {bar.start_s:.3f}s{why}"
        parts.append(
            f'<g class="span span-{state} role-{escape(bar.role or "none")}" '
            f'data-span="{escape(bar.span_id)}" data-depth="{bar.depth}">'
            f"<title>{escape(tip)}</title>"
            f'<text class="label" x="{4 + bar.depth * _INDENT}" y="{y + 13}">'
            f"{escape(name[:40])}</text>"
            f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{_ROW - 6}" rx="2"/>'
            f'<text class="tick" x="{width - 4}" y="{y + 13}" text-anchor="end">'
            f"{_duration(bar.duration_s)}</text></g>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # every label was escaped above


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"
