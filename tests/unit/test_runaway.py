"""Runaway attempts: still running far past what their phase's attempts take."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agents.guardian.policy import Fleet, GuardianRules, on_anomaly
from agents.monitor.baselines import Baseline
from agents.monitor.detection import DetectionRules, PhaseBaseline
from agents.monitor.runaway import RunningAttempt, runaway_anomalies, runaway_judged, runaway_key
from agents.monitor.watch import AnomalyWatch
from schemas.anomaly import AnomalyKind
from schemas.guardian import InterventionKind

RULES = DetectionRules()
T0 = datetime(2026, 1, 1, tzinfo=UTC)
USUAL = PhaseBaseline("implementation", "shell", 500, 10, Baseline.from_mad(20_000, 3_000, 490),
                      Baseline.of([]))  # fmt: skip


def running(minutes: float, task: str = "T.a", phase: str = "implementation") -> RunningAttempt:
    return RunningAttempt(task, 2, phase, "shell", "w-1", T0 - timedelta(minutes=minutes))


def test_an_attempt_running_ten_times_its_usual_is_a_runaway() -> None:
    [found] = runaway_anomalies([running(4)], [USUAL], T0, RULES)  # 240 s, usually 20 s
    assert found.kind is AnomalyKind.RUNAWAY and found.key == runaway_key("T.a", 2)
    assert (found.task, found.agent, found.observed) == ("T.a", "w-1", 240_000)
    assert "T.a attempt 2 has run 240 s on w-1" in found.summary and "usually take 20.0 s" in (
        found.summary
    )
    assert found.evidence == [f"T.a#2 started {(T0 - timedelta(minutes=4)).isoformat()}"]


def test_long_but_usual_short_but_ten_times_or_unknown_is_no_runaway() -> None:
    assert runaway_anomalies([running(2)], [USUAL], T0, RULES) == []  # 120 s < 10x
    quick = PhaseBaseline("implementation", "shell", 500, 0, Baseline.from_mad(1_000, 100, 500),
                          Baseline.of([]))  # fmt: skip
    assert runaway_anomalies([running(0.5)], [quick], T0, RULES) == []  # 30 s < the 60 s floor
    assert runaway_anomalies([running(30, phase="testing")], [USUAL], T0, RULES) == []
    few = PhaseBaseline("implementation", "shell", 5, 0, Baseline.from_mad(20_000, 1, 5),
                        Baseline.of([]))  # fmt: skip
    assert runaway_anomalies([running(30)], [few], T0, RULES) == []


def test_a_runaway_ends_when_its_attempt_does() -> None:
    watch = AnomalyWatch(RULES)
    [raised] = watch.judge(T0, [USUAL], running=[running(4)]).raised
    watch.activate(raised, T0)
    assert runaway_judged([running(4)]) == {raised.key}
    later = T0 + timedelta(seconds=RULES.recent_window_s + 1)
    # Finished (no longer running): unseen for a window, so it has ended.
    assert [a.key for a in watch.judge(later, [USUAL], running=[]).resolved] == [raised.key]


def test_the_guardian_cancels_a_runaway_on_its_own() -> None:
    [found] = runaway_anomalies([running(4)], [USUAL], T0, RULES)
    [decision] = on_anomaly("ev-9", found, Fleet({}, T0), GuardianRules(), "g")
    iv = decision.intervention
    assert decision.apply and (iv.kind, iv.target) == (InterventionKind.CANCEL_TASK, "T.a")
    assert iv.reason.startswith("running away: T.a attempt 2") and not iv.reversible
