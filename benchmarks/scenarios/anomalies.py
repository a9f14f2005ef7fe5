"""Anomaly detection: both kinds of error, measured.

A store is built the recorder's way (EventStore, published Parquet, Reader) from a
steady workload: four workers on three lanes (phase, capability) with log-normal run
times, 2-5 % failures and, for agent tasks, costs. For its last hour two more workers join:
one fails every attempt, one runs five times slower. The monitor's judgement
(`read_workload` and `AnomalyWatch.judge`, the code the monitor runs) is replayed at
every two minutes of the workload's time, as the monitor would have judged then:

- false positives: findings raised before the faulty workers joined, plus those about the
  good workers after (the benchmark's figure: it should be none);
- detected: how many of the two faulty workers were flagged, and how long after they
  joined (in the workload's time);
- the cost of one judgement (the two store queries and the rules).

Heartbeats and backlogs are judged the same way, from a steady simulation: agents that
beat every second with jitter and rare pauses of two beats, consumers whose backlog goes
up and down around a level. Their findings count as false positives too.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

from agents.monitor.detection import DetectionRules
from agents.monitor.watch import AnomalyWatch
from agents.monitor.workload import read_workload
from benchmarks.common import BenchConfig, Metric
from benchmarks.workloads import Attempts, Lane, steady
from bus.streams import ConsumerBacklog
from schemas import Heartbeat
from store.reader import Reader
from store.writer import EventStore

SCENARIO = "anomalies"
LANES = (
    Lane("implementation", "shell", 2.0),
    Lane("testing", "shell", 8.0, failure_rate=0.05),
    Lane("design", "agent", 30.0, cost_usd=0.02),
)
GOOD = tuple(f"worker-{i}" for i in range(4))
FAILING, SLOW = "worker-failing", "worker-slow"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
HOURS = 10.0
CHECK_EVERY = timedelta(minutes=2)


def build_store(cfg: BenchConfig, tasks: int) -> Reader:
    rng = random.Random(11)
    attempts = Attempts()
    store = EventStore(cfg.workdir / "anomalies.duckdb", cfg.workdir / "anomalies-pub").open()
    try:
        good = steady(rng, LANES, GOOD, T0, HOURS + 1, int(tasks / (HOURS + 1)))
        # Each takes its share of the work, as a new worker does.
        share = int(tasks / (HOURS + 1) / len(GOOD))
        bad = steady(rng, LANES, (FAILING, SLOW), T0 + timedelta(hours=HOURS), 1, 2 * share,
                     slow={SLOW: 5.0}, failing=(FAILING,), prefix="B")  # fmt: skip
        store.ingest([e for a in (*good, *bad) for e in attempts.events(a)])
        store.publish()
    finally:
        store.close()
    return Reader(cfg.workdir / "anomalies-pub")


def replay(reader: Reader, rules: DetectionRules) -> dict[str, float]:
    watch = AnomalyWatch(rules)
    false_positives = 0
    first_seen: dict[str, datetime] = {}
    timings = []
    now = T0 + timedelta(hours=1)  # an hour of history before the first judgement
    end = T0 + timedelta(hours=HOURS + 1)
    fault = T0 + timedelta(hours=HOURS)
    while now <= end:
        started = time.perf_counter()
        baselines, windows = read_workload(reader, now, rules)
        changed = watch.judge(now, baselines, windows)
        timings.append((time.perf_counter() - started) * 1000)
        for a in changed.raised:
            if now < fault or a.agent not in (FAILING, SLOW):
                false_positives += 1
            else:
                first_seen.setdefault(a.agent, now)
            watch.activate(a, now)
        for a in changed.resolved:
            watch.resolve(a.key)
        now += CHECK_EVERY
    delays = [(t - fault).total_seconds() for t in first_seen.values()]
    return {
        "false_positives": false_positives,
        "detected": len(first_seen),
        "delay_s": max(delays) if delays else float("nan"),
        "checks": len(timings),
        "check_ms": statistics.median(timings),
    }


def steady_beats_and_backlogs(rules: DetectionRules, samples: int) -> int:
    """Findings over `samples` checks of steady heartbeats and backlogs (all false)."""
    rng = random.Random(5)
    watch = AnomalyWatch(rules)
    agents = {f"agent-{i}": 0.0 for i in range(8)}
    depths = {f"consumer-{i}": 50 for i in range(3)}
    raised = 0
    for step in range(samples):
        now = T0 + timedelta(seconds=step)
        for agent, last in agents.items():
            gap = 2.0 if rng.random() < 0.01 else rng.gauss(1.0, 0.05)  # a rare pause
            if last + gap <= step:
                agents[agent] = float(step)
        watch.observe_beats(
            Heartbeat(agent_id=a, role="worker", at=T0 + timedelta(seconds=t), interval_s=1.0)
            for a, t in agents.items()
        )
        for name, depth in depths.items():
            depths[name] = max(0, depth + rng.randint(0, 20) - rng.randint(0, 20))
        watch.observe_backlogs(
            (ConsumerBacklog("OMOI_TASKS", n, d, 0, 0) for n, d in depths.items()), now
        )
        changed = watch.judge(now)
        raised += len(changed.raised)
        for a in changed.raised:
            watch.activate(a, now)
        for a in changed.resolved:
            watch.resolve(a.key)
    return raised


async def run(cfg: BenchConfig) -> list[Metric]:
    tasks = cfg.count(6000, 300)
    rules = DetectionRules()
    reader = await asyncio.to_thread(build_store, cfg, tasks)
    result = await asyncio.to_thread(replay, reader, rules)
    samples = cfg.count(2000, 200)
    live = await asyncio.to_thread(steady_beats_and_backlogs, rules, samples)
    params = {"tasks": tasks}
    return [
        Metric(SCENARIO, "false_positives", result["false_positives"] + live, "findings", params),
        Metric(SCENARIO, "workload_false_positives", result["false_positives"], "findings", params),
        Metric(
            SCENARIO, "heartbeat_backlog_false_positives", live, "findings", {"samples": samples}
        ),
        Metric(SCENARIO, "faulty_workers_detected", result["detected"], "of 2", params),
        Metric(SCENARIO, "detection_delay_s", result["delay_s"], "s", params),
        Metric(SCENARIO, "checks", result["checks"], "checks", params),
        Metric(SCENARIO, "check_ms", result["check_ms"], "ms", params),
    ]
