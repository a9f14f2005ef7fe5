"""The dashboard's alerts and the guardian's interventions.

Alerts: those firing now, from the store's `alerts` view (the monitor's `alert.firing` and
`alert.resolved` notices); every alert is shown here whatever the rules' routes say.
Interventions: the newest, from the `interventions` view, proposals first. Like the
charts, views onto the store: no reader or no view yet is an empty panel, never a
failed page.
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


INTERVENTIONS_SQL = (
    "SELECT id, kind, target, status, reason, coalesce(undone_by, approved_by, decided_by), "
    "updated_at FROM interventions "
    "ORDER BY status = 'proposed' DESC, updated_at DESC LIMIT ?"
)


@dataclass(frozen=True)
class InterventionRow:
    id: str
    kind: str
    target: str
    status: str
    reason: str
    by: str
    at: datetime | None


async def recent_interventions(reader: SqlReader | None, limit: int = 20) -> list[InterventionRow]:
    if reader is None:
        return []
    try:
        result = await asyncio.to_thread(reader.query, INTERVENTIONS_SQL, [limit], max_rows=limit)
    except SqlError as exc:
        log.info("no interventions for the dashboard: %s", exc)
        return []
    return [
        InterventionRow(str(i), str(k), str(t), str(s), str(r), str(b), _when(at))
        for i, k, t, s, r, b, at in result.rows
    ]


def _when(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None
