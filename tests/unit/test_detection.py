"""The monitor's anomaly rules, as pure functions: what they flag, what they leave alone,
and when a finding ends."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from agents.monitor.baselines import Baseline, binomial_tail, surprise
from agents.monitor.detection import (
    DetectionRules,
    PhaseBaseline,
    WorkerWindow,
    heartbeat_anomalies,
    queue_anomalies,
    workload_anomalies,
)
from agents.monitor.watch import AnomalyWatch
from bus.streams import ConsumerBacklog
from schemas import Heartbeat
from schemas.anomaly import AnomalyKind

RULES = DetectionRules()
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def base(attempts: int = 500, failures: int = 10, run: float = 2000.0, mad: float = 300.0,
         cost: float = 0.0) -> PhaseBaseline:  # fmt: skip
    return PhaseBaseline(
        "implementation", "shell", attempts, failures,
        Baseline.from_mad(run, mad, attempts - failures),
        Baseline.from_mad(cost, cost / 5, attempts - failures if cost else 0),
    )  # fmt: skip


def window(worker: str = "w-1", attempts: int = 10, failures: int = 0, run: float = 2100.0,
           cost: float | None = None) -> WorkerWindow:  # fmt: skip
    ok = attempts - failures
    return WorkerWindow(
        "implementation", "shell", worker, attempts, failures, run if ok else None, ok,
        cost, ok if cost is not None else 0,
        recent=tuple(f"T{i}.a#1" for i in range(attempts)),
        failed=tuple(f"T{i}.a#1" for i in range(failures)),
    )  # fmt: skip


def test_baseline_is_median_and_scaled_mad() -> None:
    b = Baseline.of([1.0, 2.0, 3.0, 4.0, 100.0])  # the outlier moves neither
    assert (b.median, round(b.spread, 4), b.samples) == (3.0, 1.4826, 5)
    assert b.score(3.0 + 2 * 1.4826, 0.0) == pytest.approx(2.0)
    # A spread of zero is floored at a fraction of the median.
    assert Baseline.of([10.0] * 9).score(12.0, 0.1) == pytest.approx(2.0)


def test_binomial_tail() -> None:
    assert binomial_tail(0, 5, 0.1) == 1.0
    assert binomial_tail(5, 5, 0.1) == pytest.approx(1e-5)
    assert binomial_tail(1, 2, 0.5) == pytest.approx(0.75)
    assert binomial_tail(3, 2, 0.5) == 0.0
    assert surprise(1e-6) == pytest.approx(6.0)


def test_a_worker_whose_attempts_all_fail_is_flagged_with_its_failed_attempts() -> None:
    (found,) = workload_anomalies([base()], [window(attempts=4, failures=4)], RULES)
    assert found.kind is AnomalyKind.FAILURE_RATE and found.agent == "w-1"
    assert found.key == "failure_rate.w-1" and found.observed == 1.0
    assert found.baseline == pytest.approx(0.02) and found.score >= RULES.failure_surprise
    assert found.evidence == ["T3.a#1", "T2.a#1", "T1.a#1", "T0.a#1"]
    assert "w-1 failed 4 of 4 attempts (100%; usually 2.0% for implementation/shell)" in (
        found.summary
    )


@pytest.mark.parametrize(
    ("attempts", "failures", "why"),
    [
        (2, 2, "too few attempts to judge"),
        (40, 3, "3 of 40 at a 2 % rate is unlucky, not broken"),
        (400, 60, "15 % is a surprise, but under the 25 % a failing worker shows"),
    ],
)
def test_failures_that_are_not_a_failing_worker(attempts: int, failures: int, why: str) -> None:
    assert workload_anomalies([base()], [window(attempts=attempts, failures=failures)], RULES) == []


def test_failures_are_judged_over_every_lane_the_worker_ran() -> None:
    lanes = [
        PhaseBaseline(p, "shell", 500, 10, Baseline.from_mad(1000, 100, 490), Baseline.of([]))
        for p in ("design", "testing")
    ]
    windows = [
        WorkerWindow(p, "shell", "w-9", 2, 2, None, 0, None, 0, failed=(f"{p}#1", f"{p}#2"))
        for p in ("design", "testing")
    ]  # two of each: neither lane alone has the 3 attempts to judge
    (found,) = workload_anomalies(lanes, windows, RULES)
    assert (found.samples, found.phase) == (4, None)
    assert "design/shell, testing/shell" in found.summary


def test_a_slow_worker_is_flagged_a_slightly_slower_one_is_not() -> None:
    (slow,) = workload_anomalies([base()], [window(run=9000.0)], RULES)
    assert slow.kind is AnomalyKind.RUN_TIME and slow.key == "run_time.implementation.shell.w-1"
    assert (slow.observed, slow.baseline) == (9000.0, 2000.0)
    assert workload_anomalies([base()], [window(run=3000.0)], RULES) == []
    # Far out in MAD terms but not twice the median: a very regular task, a little slower.
    assert workload_anomalies([base(mad=1.0)], [window(run=3500.0)], RULES) == []


def test_a_costly_worker_is_flagged() -> None:
    (costly,) = workload_anomalies([base(cost=0.02)], [window(cost=0.2)], RULES)
    assert costly.kind is AnomalyKind.COST and "costly" in costly.summary


def test_no_baseline_no_judgement() -> None:
    assert workload_anomalies([base(attempts=10)], [window(attempts=4, failures=4)], RULES) == []
    assert workload_anomalies([], [window(run=1e6)], RULES) == []


def test_a_steady_workload_raises_nothing() -> None:
    rng = random.Random(1)
    history = [rng.lognormvariate(7.6, 0.35) for _ in range(2000)]
    b = PhaseBaseline("implementation", "shell", 2000, 40, Baseline.of(history), Baseline.of([]))
    for _ in range(500):
        runs = [rng.lognormvariate(7.6, 0.35) for _ in range(rng.randint(3, 30))]
        fails = sum(rng.random() < 0.02 for _ in runs)
        w = WorkerWindow("implementation", "shell", "w", len(runs), fails,
                         Baseline.of(runs).median, len(runs), None, 0)  # fmt: skip
        assert workload_anomalies([b], [w], RULES) == []


def backlog(pending: int) -> list[ConsumerBacklog]:
    return [ConsumerBacklog("OMOI_TASKS", "implementation-shell", pending, 0, 0)]


def test_a_backlog_that_keeps_growing_is_flagged_one_that_wobbles_is_not() -> None:
    watch = AnomalyWatch(RULES)
    for i, depth in enumerate([50, 60, 45, 55, 50, 52, 48, 51]):  # usual: up and down
        watch.observe_backlogs(backlog(depth), T0 + timedelta(seconds=i))
    assert watch.judge(T0).raised == []
    for i, depth in enumerate(range(100, 800, 100)):  # seven samples, always deeper
        watch.observe_backlogs(backlog(depth), T0 + timedelta(seconds=10 + i))
    (grown,) = watch.judge(T0).raised
    assert grown.kind is AnomalyKind.QUEUE_GROWTH
    assert grown.consumer == "OMOI_TASKS/implementation-shell"
    assert grown.evidence[:2] == ["700", "600"] and "grew from 100 to 700 in 6s" in grown.summary
    # A steady climb of a few messages is not a flood, however regular.
    assert queue_anomalies({"c": [(T0, d) for d in range(0, 70, 10)]}, {}, RULES) == []


def beat(agent: str, at: float, role: str = "worker") -> Heartbeat:
    return Heartbeat(agent_id=agent, role=role, at=T0 + timedelta(seconds=at), interval_s=1.0)


def test_late_heartbeats_are_flagged_and_resolve_when_they_come_on_time() -> None:
    watch = AnomalyWatch(RULES)
    for second in range(30):
        watch.observe_beats([beat("w-1", second), beat("w-2", second)])
    assert watch.judge(T0).raised == []
    for second in range(30, 49):  # w-2 now beats every 6 s
        watch.observe_beats([beat("w-1", second), beat("w-2", second - second % 6)])
    raised = watch.judge(T0).raised
    assert [a.agent for a in raised] == ["w-2"] and raised[0].kind is AnomalyKind.HEARTBEAT_GAP
    watch.activate(raised[0], T0)
    for second in range(49, 53):
        watch.observe_beats([beat("w-1", second), beat("w-2", second)])
    changed = watch.judge(T0 + timedelta(seconds=53))
    assert changed.raised == [] and [a.key for a in changed.resolved] == ["heartbeat_gap.w-2"]
    # An agent gone is forgotten.
    watch.observe_beats([beat("w-1", 60)])
    assert set(watch.gaps) == {"w-1"}
    assert heartbeat_anomalies({"x": [1.0, 9.0, 9.0]}, {"x": "worker"}, RULES) == []  # no baseline


def test_a_finding_ends_when_judged_normal_or_unseen_for_a_window_not_for_a_quiet_spell() -> None:
    watch = AnomalyWatch(RULES)
    (failing,) = watch.judge(T0, [base()], [window(attempts=4, failures=4)]).raised
    watch.activate(failing, T0)
    later = T0 + timedelta(seconds=60)
    assert watch.judge(later, [base()], [window(attempts=4, failures=4)]).raised == []  # still on
    quiet = watch.judge(later, [base()], [window(attempts=1, failures=0)])
    assert quiet.resolved == []  # too few attempts to say
    well = watch.judge(later, [base()], [window(attempts=20, failures=1)])
    assert [a.key for a in well.resolved] == ["failure_rate.w-1"]
    # Unseen for a whole window (the worker went away): ended too.
    gone = watch.judge(later + timedelta(seconds=RULES.recent_window_s), [base()], [])
    assert [a.key for a in gone.resolved] == ["failure_rate.w-1"]
