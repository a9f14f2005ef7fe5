"""Starved tasks: a dispatch waiting in a normal lane, never delivered, far longer than a
task should wait. The guardian raises its ticket's priority (agents/guardian/policy.py).

What waits is read from the stream (the oldest message each normal-lane consumer has not
delivered yet: `bus.streams.oldest_waiting`), not from the task bucket, so a check costs
one read per consumer however many tickets there have been.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from agents.monitor.detection import DetectionRules
from bus import constants as c
from schemas.anomaly import Anomaly, AnomalyKind

_TASK_SUBJECT_TOKENS = 7  # omoi.tasks.<phase>.<capability>.<priority>.<ticket>.<task>


@dataclass(frozen=True)
class WaitingTask:
    consumer: str
    phase: str
    capability: str
    priority: str
    task_id: str  # <ticket>.<task>
    since: datetime  # when its dispatch was stored


def waiting_task(consumer: str, subject: str, since: datetime) -> WaitingTask | None:
    """The task a dispatch subject names; None for a subject that is not one."""
    parts = subject.split(".")
    if len(parts) != _TASK_SUBJECT_TOKENS or parts[:2] != ["omoi", "tasks"]:
        return None
    _, _, phase, capability, priority, ticket, task = parts
    return WaitingTask(consumer, phase, capability, priority, f"{ticket}.{task}", since)


def starved_key(task_id: str) -> str:
    return f"{AnomalyKind.STARVED.value}.{task_id}"


def starved_anomalies(
    waiting: Iterable[WaitingTask], now: datetime, rules: DetectionRules
) -> list[Anomaly]:
    found = []
    for w in waiting:
        if c.lane_of(w.priority) != c.NORMAL_LANE:
            continue  # already ahead of the rest: a slow urgent lane is a capacity matter
        waited_s = (now - w.since).total_seconds()
        if waited_s < rules.starved_s:
            continue
        anomaly = Anomaly(
            kind=AnomalyKind.STARVED,
            key=starved_key(w.task_id),
            summary=(
                f"{w.task_id} ({w.priority}) has waited {waited_s:.0f} s in "
                f"{w.consumer} without being taken"
            ),
            phase=w.phase, capability=w.capability, consumer=w.consumer, task=w.task_id,
            priority=w.priority,
            observed=waited_s * 1000, baseline=rules.starved_s * 1000,
            score=waited_s / rules.starved_s, threshold=1.0, samples=1, baseline_samples=0,
            window_s=rules.recent_window_s,
            evidence=[f"{w.task_id} dispatched {w.since.isoformat()} at {w.priority} priority"],
        )  # fmt: skip
        found.append(anomaly)
    return found
