"""The workload the monitor judges, read from the store: per (phase, capability) what is
usual over the baseline window, and per worker what it did in the recent window. Both
are one query over the `task_attempts` view (DuckDB computes the medians and MADs).

`now` is a parameter, not the database's clock, so a replay over a store (the anomaly
benchmark) judges each moment as the monitor would have then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from agents.monitor.baselines import Baseline
from agents.monitor.detection import DetectionRules, PhaseBaseline, WorkerWindow

# What an attempt that ended counts as: cancels and unfinished attempts are left out.
_ENDED = "outcome IN ('succeeded', 'failed', 'retrying')"
_FAILED = "outcome IN ('failed', 'retrying')"
_OK = "outcome = 'succeeded'"

BASELINES_SQL = f"""
SELECT phase, capability, count(*) AS attempts,
    count(*) FILTER (WHERE {_FAILED}) AS failures,
    median(run_ms) FILTER (WHERE {_OK}) AS run_median,
    mad(run_ms) FILTER (WHERE {_OK}) AS run_mad,
    count(run_ms) FILTER (WHERE {_OK}) AS run_n,
    median(cost_usd) FILTER (WHERE {_OK}) AS cost_median,
    mad(cost_usd) FILTER (WHERE {_OK}) AS cost_mad,
    count(cost_usd) FILTER (WHERE {_OK}) AS cost_n
FROM task_attempts
WHERE {_ENDED} AND finished_at >= ? AND finished_at < ? AND phase IS NOT NULL
GROUP BY ALL
ORDER BY ALL
"""

WINDOWS_SQL = f"""
SELECT phase, capability, worker, count(*) AS attempts,
    count(*) FILTER (WHERE {_FAILED}) AS failures,
    median(run_ms) FILTER (WHERE {_OK}) AS run_median,
    count(run_ms) FILTER (WHERE {_OK}) AS run_n,
    median(cost_usd) FILTER (WHERE {_OK}) AS cost_median,
    count(cost_usd) FILTER (WHERE {_OK}) AS cost_n,
    list(ticket_id || '.' || task || '#' || attempt ORDER BY finished_at DESC)[1:5] AS recent,
    list(ticket_id || '.' || task || '#' || attempt ORDER BY finished_at DESC)
        FILTER (WHERE {_FAILED})[1:5] AS failed
FROM task_attempts
WHERE {_ENDED} AND finished_at >= ? AND finished_at <= ? AND phase IS NOT NULL
    AND worker IS NOT NULL
GROUP BY ALL
ORDER BY phase, capability, worker
"""
TOTALS_SQL = """
SELECT
    (SELECT count(*) FROM task_attempts WHERE outcome IN ('failed', 'retrying')
        AND finished_at >= ? AND finished_at <= ?) AS failed_attempts,
    (SELECT coalesce(sum(cost_usd), 0) FROM task_attempts
        WHERE finished_at >= ? AND finished_at <= ?) AS cost_usd,
    (SELECT count(*) FROM dead_letters WHERE "at" >= ? AND "at" <= ?) AS dead_letters
"""
_MAX_ROWS = 10_000


@dataclass(frozen=True)
class Totals:
    """The recent window's figures that alert rules can put a threshold on."""

    failed_attempts: int
    cost_usd: float
    dead_letters: int


class Result(Protocol):
    columns: list[str]
    rows: list[tuple[Any, ...]]


class StoreReader(Protocol):
    """`store.reader.Reader`, or anything that answers a SELECT like it. Synchronous."""

    def query(self, sql: str, params: Sequence[object] = (), *, max_rows: int) -> Any: ...


def read_workload(
    reader: StoreReader, now: datetime, rules: DetectionRules
) -> tuple[list[PhaseBaseline], list[WorkerWindow]]:
    """The baselines (the baseline window before the recent one) and the recent windows."""
    recent_from = now - timedelta(seconds=rules.recent_window_s)
    base_from = recent_from - timedelta(seconds=rules.baseline_window_s)
    base = reader.query(BASELINES_SQL, [base_from, recent_from], max_rows=_MAX_ROWS)
    recent = reader.query(WINDOWS_SQL, [recent_from, now], max_rows=_MAX_ROWS)
    return [_baseline(r) for r in _dicts(base)], [_window(r) for r in _dicts(recent)]


def read_totals(reader: StoreReader, now: datetime, window_s: float) -> Totals:
    since = now - timedelta(seconds=window_s)
    result = reader.query(TOTALS_SQL, [since, now] * 3, max_rows=1)
    (row,) = _dicts(result)
    return Totals(int(row["failed_attempts"]), float(row["cost_usd"]), int(row["dead_letters"]))


def _dicts(result: Result) -> list[dict[str, Any]]:
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


def _baseline(r: dict[str, Any]) -> PhaseBaseline:
    return PhaseBaseline(
        phase=str(r["phase"]),
        capability=str(r["capability"]),
        attempts=int(r["attempts"]),
        failures=int(r["failures"]),
        run_ms=Baseline.from_mad(r["run_median"], r["run_mad"], int(r["run_n"])),
        cost_usd=Baseline.from_mad(r["cost_median"], r["cost_mad"], int(r["cost_n"])),
    )


def _window(r: dict[str, Any]) -> WorkerWindow:
    return WorkerWindow(
        phase=str(r["phase"]),
        capability=str(r["capability"]),
        worker=str(r["worker"]),
        attempts=int(r["attempts"]),
        failures=int(r["failures"]),
        run_ms=_float(r["run_median"]),
        run_samples=int(r["run_n"]),
        cost_usd=_float(r["cost_median"]),
        cost_samples=int(r["cost_n"]),
        recent=tuple(r["recent"] or ()),
        failed=tuple(r["failed"] or ()),
    )


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
