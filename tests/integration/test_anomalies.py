"""The monitor's anomaly detection on real parts: a DuckDB store the recorder's way
(EventStore, published Parquet, Reader), a nats-server, and the monitor under its own
identity. A failing and a slow worker are reported with their evidence, a steady worker
is not, and a finding ends when the worker does well again; an attempt running away is
reported, and the guardian cancels it."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from agents.executors.shell import ShellExecutor
from agents.guardian.agent import Guardian
from agents.monitor.agent import Monitor
from agents.monitor.detection import DetectionRules
from agents.planner.agent import Planner
from agents.settings import Settings
from agents.worker.agent import Worker
from benchmarks.workloads import steady
from bus import Bus
from schemas import AGENTS_TOKEN, Event, utcnow
from schemas.anomaly import Anomaly, AnomalyKind
from store.reader import Reader
from tests.helpers import EventLog, Running, gated, submit
from tests.integration.monitor_support import GOOD, LANES, Store

pytestmark = pytest.mark.integration


def anomaly(event: Event) -> Anomaly:
    return Anomaly.model_validate(event.data)


async def test_the_monitor_reports_a_failing_and_a_slow_worker_and_when_one_recovers(
    settings: Settings, store: Store, monitor_bus: Bus, events: EventLog, running: Running
) -> None:
    rng = random.Random(3)
    now = utcnow()
    # Two hours of a steady workload, then the recent window: two good workers go on,
    # one fails everything, one is five times slower.
    store.add(list(steady(rng, LANES, GOOD, now - timedelta(hours=2), 1.9, 600)))
    recent = now - timedelta(minutes=4)
    store.add(list(steady(rng, LANES, GOOD, recent, 0.06, 600, prefix="G")))
    store.add(
        list(steady(rng, LANES[:1], ["w-bad"], recent, 0.06, 100, failing=["w-bad"], prefix="B"))
    )
    store.add(
        list(
            steady(rng, LANES[:1], ["w-slow"], recent, 0.06, 100, slow={"w-slow": 5.0}, prefix="S")
        )
    )
    fast = settings.model_copy(update={"anomaly_interval_s": 0.2})
    monitor = Monitor(monitor_bus, fast, store=Reader(fast.published_dir, refresh_s=0.1))
    await running.start(monitor)

    failing = anomaly(await events.wait_type(AGENTS_TOKEN, "anomaly.detected", agent="w-bad"))
    assert failing.kind is AnomalyKind.FAILURE_RATE and failing.observed == 1.0
    assert failing.samples == 6 and failing.baseline < 0.1 and len(failing.evidence) == 5
    assert all(ref.startswith("B") and ref.endswith("#1") for ref in failing.evidence)
    slow = anomaly(await events.wait_type(AGENTS_TOKEN, "anomaly.detected", agent="w-slow"))
    assert slow.kind is AnomalyKind.RUN_TIME and slow.phase == "implementation"
    assert slow.observed > 4 * slow.baseline and 1500 < slow.baseline < 2500  # ms
    # The backlogs were sampled too, under the monitor's own permissions.
    assert any(name.startswith("OMOI_TASKS/") for name in monitor.watch.depths)

    # w-bad does well again: enough good attempts to say so, and its finding ends.
    again = now - timedelta(minutes=2)
    store.add(list(steady(rng, LANES[:1], ["w-bad"], again, 0.03, 1500, prefix="R")))
    resolved = await events.wait_type(AGENTS_TOKEN, "anomaly.resolved", agent="w-bad")
    assert anomaly(resolved).key == failing.key == "failure_rate.w-bad"
    assert resolved.data["since"] and resolved.id.startswith("failure_rate.w-bad.anomaly.resolved.")
    # One detection each, and none for the good workers.
    detected = events.of(AGENTS_TOKEN, "anomaly.detected")
    assert sorted(e.agent or "" for e in detected) == ["w-bad", "w-slow"]


async def test_a_runaway_attempt_is_reported_and_the_guardian_cancels_it(
    settings: Settings, store: Store, monitor_bus: Bus, bus: Bus, events: EventLog,
    running: Running,
) -> None:  # fmt: skip
    rng, now = random.Random(5), utcnow()
    # Implementation attempts usually take 2 s; one that has run 5 s is running away here.
    store.add(list(steady(rng, LANES, GOOD, now - timedelta(hours=2), 1.9, 600)))
    rules = DetectionRules(runaway_ratio=2.5, runaway_min_s=1.0)
    fast = settings.model_copy(update={"anomaly_interval_s": 0.5})
    await running.start(Planner(bus, fast))
    await running.start(
        Worker(bus, fast, phases=["implementation"], capabilities=["shell"],
               executors={"shell": ShellExecutor({}, fast)}, agent_id="w-runner")
    )  # fmt: skip
    assert fast.nats_url
    own = await Bus.connect(fast.nats_url, name="g", credentials=fast.credentials("guardian"))
    try:
        await running.start(Guardian(own, fast))
        spec = {"name": "spin", "phase": "implementation", "command": gated("spin", 60)}
        assert (await submit(bus, {"id": "away", "title": "runaway", "tasks": [spec]}))["ok"]
        monitor = Monitor(monitor_bus, fast, store=Reader(fast.published_dir, refresh_s=0.1),
                          rules=rules)  # fmt: skip
        await running.start(monitor)
        detected = await events.wait(
            lambda e: e.type == "anomaly.detected" and e.data["kind"] == "runaway", timeout=30
        )
        found = anomaly(detected)
        assert (found.task, found.agent) == ("away.spin", "w-runner")
        assert found.observed >= 2.5 * found.baseline and 1500 < found.baseline < 2500
        cancelled = await events.wait_type("away", "task.cancelled", task="spin", timeout=30)
        assert cancelled.data["reason"].startswith("guardian: running away: away.spin attempt 1")
        await events.wait_type("away", "ticket.failed", timeout=30)
    finally:
        await running.stop_all()
        await own.close()
