"""Runaway attempts: one still running far longer than its (phase, capability)'s finished
attempts take. The guardian cancels it (agents/guardian/policy.py); a running attempt is
seen through its worker's heartbeat (`current_task`) and its state's `started_at`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from agents.monitor.detection import DetectionRules, PhaseBaseline
from schemas.anomaly import Anomaly, AnomalyKind


@dataclass(frozen=True)
class RunningAttempt:
    task_id: str
    attempt: int
    phase: str
    capability: str
    worker: str | None
    started_at: datetime


def runaway_key(task_id: str, attempt: int) -> str:
    return f"{AnomalyKind.RUNAWAY.value}.{task_id}#{attempt}"


def runaway_anomalies(
    running: Iterable[RunningAttempt],
    baselines: Iterable[PhaseBaseline],
    now: datetime,
    rules: DetectionRules,
) -> list[Anomaly]:
    usual = {
        (b.phase, b.capability): b.run_ms
        for b in baselines
        if b.run_ms.samples >= rules.min_baseline and b.run_ms.median > 0
    }
    found = []
    for r in running:
        base = usual.get((r.phase, r.capability))
        if base is None:
            continue
        ran_ms = (now - r.started_at).total_seconds() * 1000
        score = base.score(ran_ms, rules.spread_floor)
        if ran_ms < max(rules.runaway_ratio * base.median, rules.runaway_min_s * 1000):
            continue
        if score < rules.z:
            continue
        anomaly = Anomaly(
            kind=AnomalyKind.RUNAWAY,
            key=runaway_key(r.task_id, r.attempt),
            summary=(
                f"{r.task_id} attempt {r.attempt} has run {ran_ms / 1000:.0f} s on "
                f"{r.worker}; {r.phase}/{r.capability} attempts usually take "
                f"{base.median / 1000:.1f} s"
            ),
            phase=r.phase, capability=r.capability, agent=r.worker, task=r.task_id,
            observed=ran_ms, baseline=base.median, spread=base.spread, score=score,
            threshold=rules.z, samples=1, baseline_samples=base.samples,
            window_s=rules.recent_window_s,
            evidence=[f"{r.task_id}#{r.attempt} started {r.started_at.isoformat()}"],
        )  # fmt: skip
        found.append(anomaly)
    return found


def runaway_judged(running: Iterable[RunningAttempt]) -> set[str]:
    """Attempts still running: a runaway among them not found again is no longer one (a
    finished attempt is simply unseen, and ends a window later)."""
    return {runaway_key(r.task_id, r.attempt) for r in running}
