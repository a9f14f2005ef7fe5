"""Deciding what is anomalous: pure functions from what the monitor measured (and its
baselines) to `Anomaly` findings. The monitor applies them (events); nothing here reads
the bus or the store.

Every rule asks two things, so that a steady workload stays quiet: is the value far out
in the baseline's own terms (a robust z-score, or a binomial tail for failures), and is
it far out in plain terms too (twice the median, a failure rate of a quarter, a hundred
messages of backlog)? The first alone flags a 3 ms wobble of a very regular task; the
second alone flags whatever is usual for a noisy one.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from statistics import median

from agents.monitor.baselines import Baseline, binomial_tail, surprise
from schemas.anomaly import Anomaly, AnomalyKind


@dataclass(frozen=True)
class DetectionRules:
    # The recent window a worker is judged on, and the history before it that says what
    # is usual.
    recent_window_s: float = 300.0
    baseline_window_s: float = 24 * 3600.0
    # Finished attempts a worker needs in the window, and the baseline needs, to judge.
    min_samples: int = 3
    min_baseline: int = 20
    # Run time and cost: robust z at least `z`, and at least `min_ratio` times the median.
    z: float = 6.0
    min_ratio: float = 2.0
    # The spread is at least this fraction of the median (a regular task has a MAD ~0).
    spread_floor: float = 0.1
    # Failures: P(this many at the baseline's rate) at most 10^-failure_surprise, and the
    # worker's rate at least `min_failure_rate`. A spotless history counts as
    # `failure_floor_rate`, so that it does not make a single failure a surprise.
    failure_surprise: float = 6.0
    min_failure_rate: float = 0.25
    failure_floor_rate: float = 0.01
    # Queue growth: this many samples in a row, each deeper than the last, by at least
    # `queue_min_growth` messages in all.
    queue_samples: int = 6
    queue_min_growth: int = 100
    # Heartbeat gaps: the median of an agent's last `gap_samples` gaps at least
    # `gap_ratio` times its role's median gap (and `z` spreads out).
    gap_samples: int = 3
    gap_ratio: float = 3.0
    # Runaway attempts: running at least `runaway_ratio` times the median (and `z`
    # spreads out), and at least `runaway_min_s`.
    runaway_ratio: float = 10.0
    runaway_min_s: float = 60.0
    # Starved tasks: waiting in the normal lane, never delivered, for at least this long.
    starved_s: float = 900.0


@dataclass(frozen=True)
class PhaseBaseline:
    """What is usual for one (phase, capability), from the baseline window."""

    phase: str
    capability: str
    attempts: int
    failures: int
    run_ms: Baseline  # of succeeded attempts
    cost_usd: Baseline  # of succeeded attempts that reported a cost

    @property
    def failure_rate(self) -> float:
        return self.failures / self.attempts if self.attempts else 0.0


@dataclass(frozen=True)
class WorkerWindow:
    """One worker's finished attempts of one (phase, capability) in the recent window."""

    phase: str
    capability: str
    worker: str
    attempts: int
    failures: int
    run_ms: float | None  # median of succeeded attempts
    run_samples: int
    cost_usd: float | None  # median of succeeded attempts that reported a cost
    cost_samples: int
    recent: tuple[str, ...] = ()  # its attempts, newest first
    failed: tuple[str, ...] = ()  # its failed attempts, newest first


def workload_anomalies(
    baselines: Iterable[PhaseBaseline], windows: Iterable[WorkerWindow], rules: DetectionRules
) -> list[Anomaly]:
    """Workers whose attempts fail too often (over all they ran), or are slow or costly
    against their (phase, capability)'s baseline."""
    usual = {(b.phase, b.capability): b for b in baselines if b.attempts >= rules.min_baseline}
    judged = [
        (w, usual[(w.phase, w.capability)]) for w in windows if (w.phase, w.capability) in usual
    ]
    found: list[Anomaly] = []
    by_worker: dict[str, list[tuple[WorkerWindow, PhaseBaseline]]] = {}
    for w, base in judged:
        by_worker.setdefault(w.worker, []).append((w, base))
        found += filter(None, _costly_or_slow(w, base, rules))
    for worker, lanes in by_worker.items():
        found += filter(None, [_failing(worker, lanes, rules)])
    return found


def workload_judged(
    baselines: Iterable[PhaseBaseline], windows: Iterable[WorkerWindow], rules: DetectionRules
) -> set[str]:
    """The keys the windows hold enough to judge: an active finding among them that is
    not found again has ended; one not among them has too few attempts to say (yet)."""
    usual = {(b.phase, b.capability): b for b in baselines if b.attempts >= rules.min_baseline}
    keys: set[str] = set()
    attempts: dict[str, int] = {}
    for w in windows:
        base = usual.get((w.phase, w.capability))
        if base is None:
            continue
        attempts[w.worker] = attempts.get(w.worker, 0) + w.attempts
        for kind, samples, usual_of in (
            (AnomalyKind.RUN_TIME, w.run_samples, base.run_ms),
            (AnomalyKind.COST, w.cost_samples, base.cost_usd),
        ):
            if samples >= rules.min_samples and usual_of.samples >= rules.min_baseline:
                keys.add(_key(kind, w.phase, w.capability, w.worker))
    keys |= {
        _key(AnomalyKind.FAILURE_RATE, w) for w, n in attempts.items() if n >= rules.min_samples
    }
    return keys


def _failing(
    worker: str, lanes: Sequence[tuple[WorkerWindow, PhaseBaseline]], rules: DetectionRules
) -> Anomaly | None:
    """A worker's failures over every lane it ran, against what those lanes' rates make
    likely for that mix."""
    attempts = sum(w.attempts for w, _ in lanes)
    failures = sum(w.failures for w, _ in lanes)
    if attempts < rules.min_samples or not failures:
        return None
    expected = sum(w.attempts * max(b.failure_rate, rules.failure_floor_rate) for w, b in lanes)
    usual = sum(w.attempts * b.failure_rate for w, b in lanes) / attempts
    rate = failures / attempts
    score = surprise(binomial_tail(failures, attempts, expected / attempts))
    if score < rules.failure_surprise or rate < rules.min_failure_rate:
        return None
    lanes = sorted(lanes, key=lambda lane: (lane[0].phase, lane[0].capability))
    only = lanes[0][0] if len(lanes) == 1 else None
    failed = [ref for w, _ in lanes for ref in w.failed]
    return Anomaly(
        kind=AnomalyKind.FAILURE_RATE,
        key=_key(AnomalyKind.FAILURE_RATE, worker),
        summary=(
            f"{worker} failed {failures} of {attempts} attempts ({rate:.0%}; usually "
            f"{usual:.1%} for {', '.join(f'{w.phase}/{w.capability}' for w, _ in lanes)})"
        ),
        phase=only.phase if only else None, capability=only.capability if only else None,
        agent=worker, observed=rate, baseline=usual, score=score,
        threshold=rules.failure_surprise, samples=attempts,
        baseline_samples=sum(b.attempts for _, b in lanes), window_s=rules.recent_window_s,
        evidence=sorted(failed, reverse=True)[:5],
    )  # fmt: skip


def _costly_or_slow(
    w: WorkerWindow, base: PhaseBaseline, rules: DetectionRules
) -> Iterable[Anomaly | None]:
    measures = (
        (AnomalyKind.RUN_TIME, w.run_ms, w.run_samples, base.run_ms, "ms", "slow"),
        (AnomalyKind.COST, w.cost_usd, w.cost_samples, base.cost_usd, "USD", "costly"),
    )
    for kind, value, samples, usual, unit, word in measures:
        if value is None or samples < rules.min_samples or usual.samples < rules.min_baseline:
            yield None
            continue
        score = usual.score(value, rules.spread_floor)
        if score < rules.z or value < rules.min_ratio * usual.median:
            yield None
            continue
        yield Anomaly(
            kind=kind,
            key=_key(kind, w.phase, w.capability, w.worker),
            summary=(
                f"{w.worker} is {word}: its {w.phase}/{w.capability} attempts take a median "
                f"{_fmt(value)} {unit}, usually {_fmt(usual.median)} {unit}"
            ),
            phase=w.phase, capability=w.capability, agent=w.worker,
            observed=value, baseline=usual.median, spread=usual.spread, score=score,
            threshold=rules.z, samples=samples, baseline_samples=usual.samples,
            window_s=rules.recent_window_s, evidence=list(w.recent[:5]),
        )  # fmt: skip


def queue_anomalies(
    depths: Mapping[str, Sequence[tuple[datetime, int]]],
    deltas: Mapping[str, Sequence[int]],
    rules: DetectionRules,
) -> list[Anomaly]:
    """Consumers whose backlog grew at every one of the last `queue_samples` samples, by
    `queue_min_growth` in all, faster than their usual change from one sample to the next
    (`deltas`: the consumer's history of those changes)."""
    found = []
    for consumer, samples in depths.items():
        recent = list(samples)[-(rules.queue_samples + 1) :]
        if len(recent) <= rules.queue_samples:
            continue
        steps = [b[1] - a[1] for a, b in itertools.pairwise(recent)]
        growth = recent[-1][1] - recent[0][1]
        if min(steps) <= 0 or growth < rules.queue_min_growth:
            continue
        usual = Baseline.of([float(d) for d in deltas.get(consumer, ())])
        rate = growth / len(steps)
        score = usual.score(rate, 0.0, floor_abs=1.0)
        if score < rules.z:
            continue
        window = (recent[-1][0] - recent[0][0]).total_seconds()
        found.append(
            Anomaly(
                kind=AnomalyKind.QUEUE_GROWTH,
                key=_key(AnomalyKind.QUEUE_GROWTH, consumer),
                summary=(
                    f"{consumer}'s backlog grew from {recent[0][1]} to {recent[-1][1]} "
                    f"in {window:.0f}s"
                ),
                consumer=consumer,
                observed=rate,
                baseline=usual.median,
                spread=usual.spread,
                score=score,
                threshold=rules.z,
                samples=len(steps),
                baseline_samples=usual.samples,
                window_s=window,
                evidence=[str(depth) for _, depth in reversed(recent)],
            )
        )
    return found


def heartbeat_anomalies(
    gaps: Mapping[str, Sequence[float]], roles: Mapping[str, str], rules: DetectionRules
) -> list[Anomaly]:
    """Agents whose last heartbeat gaps are far longer than their role's usual gap."""
    by_role: dict[str, list[float]] = {}
    for agent, seen in gaps.items():
        by_role.setdefault(roles.get(agent, ""), []).extend(seen)
    found = []
    for agent, seen in gaps.items():
        last = list(seen)[-rules.gap_samples :]
        usual = Baseline.of(by_role[roles.get(agent, "")])
        if len(last) < rules.gap_samples or usual.samples < rules.min_baseline:
            continue
        gap = median(last)
        score = usual.score(gap, rules.spread_floor)
        if score < rules.z or gap < rules.gap_ratio * usual.median:
            continue
        found.append(
            Anomaly(
                kind=AnomalyKind.HEARTBEAT_GAP,
                key=_key(AnomalyKind.HEARTBEAT_GAP, agent),
                summary=f"{agent} beats every {gap:.1f}s, usually every {usual.median:.1f}s",
                agent=agent,
                observed=gap,
                baseline=usual.median,
                spread=usual.spread,
                score=score,
                threshold=rules.z,
                samples=len(last),
                baseline_samples=usual.samples,
                window_s=sum(last),
                evidence=[f"{g:.2f}s" for g in reversed(last)],
            )
        )
    return found


def queue_judged(depths: Mapping[str, Sequence[object]], rules: DetectionRules) -> set[str]:
    return {
        _key(AnomalyKind.QUEUE_GROWTH, name)
        for name, samples in depths.items()
        if len(samples) > rules.queue_samples
    }


def heartbeat_judged(gaps: Mapping[str, Sequence[float]], rules: DetectionRules) -> set[str]:
    return {
        _key(AnomalyKind.HEARTBEAT_GAP, agent)
        for agent, seen in gaps.items()
        if len(seen) >= rules.gap_samples
    }


@dataclass(frozen=True)
class Changes:
    raised: list[Anomaly]
    resolved: list[Anomaly]


def changes(
    active: Mapping[str, Anomaly],
    found: Iterable[Anomaly],
    judged: set[str],
    unseen: Callable[[str], bool],
) -> Changes:
    """What a check changed: findings new since the last, and active ones that ended. One
    not found again has ended if there was enough to judge it (`judged`), or if it has
    gone unseen for a whole window (`unseen`: its worker went away); a window with too
    few attempts to say is no news either way."""
    now = {a.key: a for a in found}
    return Changes(
        raised=[a for key, a in now.items() if key not in active],
        resolved=[
            a for key, a in active.items() if key not in now and (key in judged or unseen(key))
        ],
    )


def _key(kind: AnomalyKind, *parts: str) -> str:
    return ".".join((kind.value, *parts))


def _fmt(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
