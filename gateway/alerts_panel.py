"""The dashboard's alerts: those firing now, from the store's `alerts` view (the monitor's
`alert.firing` and `alert.resolved` notices). Every alert is shown here whatever the
rules' routes say. Like the charts, a view onto the store: no reader or no view yet is
an empty panel, never a failed page.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.sql import SqlError, SqlReader

log = logging.getLogger(__name__)

FIRING_SQL = (
    "SELECT rule, severity, key, summary, started_at FROM alerts WHERE status = 'firing' "
    "ORDER BY CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, "
    "started_at DESC LIMIT ?"
)


@dataclass(frozen=True)
class FiringAlert:
    rule: str
    severity: str
    key: str
    summary: str
    started_at: datetime | None


async def firing_alerts(reader: SqlReader | None, limit: int = 50) -> list[FiringAlert]:
    if reader is None:
        return []
    try:
        result = await asyncio.to_thread(reader.query, FIRING_SQL, [limit], max_rows=limit)
    except SqlError as exc:
        log.info("no alerts for the dashboard: %s", exc)
        return []
    return [
        FiringAlert(str(r), str(s), str(k), str(m), _when(at)) for r, s, k, m, at in result.rows
    ]


def _when(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None
