"""Starved tasks, as the monitor finds them and the guardian answers them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agents.guardian.policy import Fleet, GuardianRules, on_anomaly
from agents.monitor.detection import DetectionRules
from agents.monitor.starved import WaitingTask, starved_anomalies, starved_key, waiting_task
from agents.monitor.watch import AnomalyWatch
from schemas.anomaly import AnomalyKind
from schemas.guardian import InterventionKind

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
RULES = DetectionRules(starved_s=600.0)


def waiting(priority: str = "normal", waited_s: float = 900.0) -> WaitingTask:
    subject = f"omoi.tasks.design.shell.{priority}.T.a"
    found = waiting_task("tasks-design-shell", subject, T0 - timedelta(seconds=waited_s))
    assert found is not None
    return found


def test_a_dispatch_subject_names_its_task_and_priority() -> None:
    w = waiting("low")
    assert (w.phase, w.capability, w.priority, w.task_id) == ("design", "shell", "low", "T.a")
    assert waiting_task("c", "omoi.tasks.design.shell.T.a", T0) is None  # no priority token
    assert waiting_task("c", "omoi.gates.design.shell.normal.T.a", T0) is None


def test_a_task_waiting_past_the_limit_in_the_normal_lane_is_starved() -> None:
    [found] = starved_anomalies([waiting("normal"), waiting("low", 10.0)], T0, RULES)
    assert (found.kind, found.key, found.task) == (AnomalyKind.STARVED, "starved.T.a", "T.a")
    assert (found.priority, found.consumer) == ("normal", "tasks-design-shell")
    assert found.observed == 900_000 and found.baseline == 600_000 and found.score == 1.5
    assert "has waited 900 s" in found.summary


def test_urgent_tasks_and_short_waits_are_not_starved() -> None:
    assert starved_anomalies([waiting("high"), waiting("critical")], T0, RULES) == []
    assert starved_anomalies([waiting("normal", 599.0)], T0, RULES) == []


def test_a_starved_task_is_announced_once_while_it_waits() -> None:
    watch = AnomalyWatch(RULES)
    first = watch.judge(T0, waiting=[waiting()])
    [raised] = first.raised
    watch.activate(raised, T0)
    later = watch.judge(T0 + timedelta(seconds=30), waiting=[waiting(waited_s=930.0)])
    assert later.raised == [] and later.resolved == []
    assert starved_key("T.a") in watch.active


def test_the_guardian_raises_a_starved_tickets_priority_to_high_on_its_own() -> None:
    [found] = starved_anomalies([waiting("low")], T0, DetectionRules(starved_s=60.0))
    [decision] = on_anomaly("ev-7", found, Fleet({}, T0), GuardianRules(), "g")
    iv = decision.intervention
    assert decision.apply and iv.autonomous and iv.reversible
    assert (iv.kind, iv.target) == (InterventionKind.RAISE_PRIORITY, "T")
    assert (iv.priority, iv.previous_priority) == ("high", "low")
    assert iv.reason.startswith("starved: T.a (low) has waited")
    timid = GuardianRules(autonomous=frozenset())
    [proposed] = on_anomaly("ev-7", found, Fleet({}, T0), timid, "g")
    assert not proposed.apply
