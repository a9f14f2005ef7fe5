"""The dashboard's charts: three queries over the store's views, drawn as inline SVG.

A chart is decoration: no reader, a view that does not exist yet, an empty result, or a
reader that breaks all end in "no data yet" for that chart, never in a failed page.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from markupsafe import Markup

from gateway import svg
from gateway.sql import SqlError, SqlReader
from schemas import WORK_PHASES

log = logging.getLogger(__name__)

THROUGHPUT_SQL = (
    "SELECT minute, succeeded, failed FROM throughput_per_minute ORDER BY minute DESC LIMIT 60"
)
# Columns are picked by name: the store calls them schedule_to_start_p50_ms ... run_p95_ms
# (the first design said p50_start_ms ... p95_run_ms; both are understood).
LATENCY_SQL = "SELECT * FROM latency_by_phase_capability"
LATENCY_SERIES = (
    ("p50 wait ms", ("schedule_to_start_p50_ms", "p50_start_ms")),
    ("p95 wait ms", ("schedule_to_start_p95_ms", "p95_start_ms")),
    ("p50 run ms", ("run_p50_ms", "p50_run_ms")),
    ("p95 run ms", ("run_p95_ms", "p95_run_ms")),
)
CAUSES_SQL = 'SELECT error_category, "count" FROM retry_causes ORDER BY 2 DESC LIMIT 12'
_MAX_ROWS = 200
_PHASE_ORDER = {p.value: i for i, p in enumerate(WORK_PHASES)}


@dataclass(frozen=True)
class Chart:
    key: str
    title: str
    svg: Markup | None


def _num(value: Any) -> float:
    return float(value) if value is not None else 0.0


def _minute(value: Any) -> str:
    return value.strftime("%H:%M") if isinstance(value, datetime) else str(value)[11:16]


def _column(columns: Sequence[str], names: Sequence[str]) -> int:
    for name in names:
        if name in columns:
            return list(columns).index(name)
    raise ValueError(f"none of the columns {list(names)} in {list(columns)}")


def throughput(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Markup | None:
    if not rows:
        return None
    ordered = list(reversed(rows))
    return svg.bar_chart(
        [_minute(r[0]) for r in ordered],
        [("succeeded", [_num(r[1]) for r in ordered]), ("failed", [_num(r[2]) for r in ordered])],
        title="Tasks finished per minute",
        stacked=True,
        label_every=max(1, len(ordered) // 8),
    )


def latency(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Markup | None:
    if not rows:
        return None
    phase, capability = _column(columns, ["phase"]), _column(columns, ["capability"])
    ordered = sorted(rows, key=lambda r: (_PHASE_ORDER.get(str(r[phase]), 99), str(r[capability])))
    series = []
    for label, names in LATENCY_SERIES:
        i = _column(columns, names)
        series.append((label, [_num(r[i]) for r in ordered]))
    return svg.bar_chart(
        [f"{r[phase]}/{r[capability]}" for r in ordered],
        series,
        title="Latency by phase and capability",
    )


def causes(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Markup | None:
    if not rows:
        return None
    return svg.hbar_chart(
        [str(r[0]) for r in rows], [_num(r[1]) for r in rows], title="Retried attempts by cause"
    )


_CHARTS = (
    ("throughput", "Throughput", THROUGHPUT_SQL, throughput),
    ("latency", "Latency percentiles", LATENCY_SQL, latency),
    ("causes", "Retries by cause", CAUSES_SQL, causes),
)


async def _one(reader: SqlReader | None, key: str, sql: str, draw: Any) -> Markup | None:
    if reader is None:
        return None
    try:
        result = await asyncio.to_thread(reader.query, sql, max_rows=_MAX_ROWS)
    except SqlError as exc:
        log.info("chart %s has no data: %s", key, exc)
        return None
    try:
        drawn: Markup | None = draw(result.columns, result.rows)
    except (TypeError, ValueError, IndexError):
        # The view's shape is not what this chart expects; say so once per render.
        log.warning("chart %s cannot draw the rows it got", key, exc_info=True)
        return None
    return drawn


async def charts(reader: SqlReader | None) -> list[Chart]:
    drawn = await asyncio.gather(*(_one(reader, key, sql, draw) for key, _, sql, draw in _CHARTS))
    return [
        Chart(key=key, title=title, svg=svg_)
        for (key, title, _, _), svg_ in zip(_CHARTS, drawn, strict=True)
    ]
