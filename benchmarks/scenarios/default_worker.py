"""Scenario: workers as `omoi up --workers 2` runs them, which the other scenarios do not.

Each worker serves every phase with `shell` and `agent` (ten consumers) and runs one task
at a time. Tickets have three chained 0.2 s shell tasks, one per phase (requirements →
design → implementation), all submitted at once. Reported: throughput, the share of the
workers' time spent running tasks, and the idle gap, from the end of a task to the same
worker's next start while other work was queued (the time fetching takes).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from datetime import datetime, timedelta
from typing import Any

from benchmarks.common import BenchConfig, Metric
from benchmarks.scenarios.latency import percentile
from benchmarks.scenarios.omoi_stack import omoi_stack
from bus import constants as c
from schemas import Event

WORKERS = 2
TASK_S = 0.2
PHASES = ("requirements", "design", "implementation")


def ticket(i: int) -> dict[str, Any]:
    tasks = [{"name": p[:3], "phase": p, "command": f"sleep {TASK_S}"} for p in PHASES]
    return {"id": f"dw-{i}", "title": f"default worker {i}", "tasks": tasks}


async def run(cfg: BenchConfig) -> list[Metric]:
    tickets = cfg.count(40, minimum=4)
    events: list[Event] = []
    done = asyncio.Event()

    async def on_event(msg: Any) -> None:
        event = Event.model_validate_json(msg.data)
        events.append(event)
        if event.type == "ticket.done" and sum(e.type == "ticket.done" for e in events) >= tickets:
            done.set()

    async with omoi_stack(
        cfg.workdir / "default-worker",
        workers=WORKERS,
        capabilities=("shell", "agent"),
        concurrency=1,
    ) as stack:
        sub = await stack.bus.nc.subscribe("omoi.events.>", cb=on_event)
        start = time.perf_counter()
        for i in range(tickets):
            await stack.bus.nc.publish(c.SUBMIT_SUBJECT, json.dumps(ticket(i)).encode())
        await stack.bus.nc.flush()
        await asyncio.wait_for(done.wait(), timeout=600)
        elapsed = time.perf_counter() - start
        await sub.unsubscribe()

    runs = _runs(events)
    work = sum(duration.total_seconds() for _, _, duration in runs)
    gaps = _idle_gaps(runs, events)
    params = {"workers": WORKERS}
    return [
        Metric("default_worker", "tasks_per_s", len(runs) / elapsed, "tasks/s", params),
        Metric("default_worker", "busy_pct", 100 * work / (elapsed * WORKERS), "%", params),
        Metric("default_worker", "idle_gap_p50_ms", percentile(gaps, 0.5), "ms", params),
        Metric("default_worker", "idle_gap_p99_ms", percentile(gaps, 0.99), "ms", params),
        Metric("default_worker", "idle_gap_max_ms", max(gaps, default=float("nan")), "ms", params),
    ]


def _runs(events: list[Event]) -> list[tuple[str, datetime, timedelta]]:
    """(worker, start, duration) of every task run."""
    started = {(e.ticket_id, e.task): e for e in events if e.type == "task.started"}
    out = []
    for e in events:
        begun = started.get((e.ticket_id, e.task))
        if e.type == "task.succeeded" and begun is not None and begun.agent:
            duration = timedelta(seconds=float(e.data.get("duration_s") or 0.0))
            out.append((begun.agent, begun.at, duration))
    return out


def _idle_gaps(runs: list[tuple[str, datetime, timedelta]], events: list[Event]) -> list[float]:
    """Milliseconds from each task's end to its worker's next start, counted only when
    another task was already queued at that end (a gap then is the worker's, not the
    planner's)."""
    queued = [e.at for e in events if e.type == "task.queued"]
    starts = sorted(at for _, at, _ in runs)
    gaps = []
    by_worker: dict[str, list[tuple[datetime, timedelta]]] = {}
    for worker, at, duration in runs:
        by_worker.setdefault(worker, []).append((at, duration))
    for spans in by_worker.values():
        spans.sort()
        for (at, duration), (nxt, _) in itertools.pairwise(spans):
            end = at + duration
            waiting = sum(1 for q in queued if q <= end) - sum(1 for s in starts if s <= end)
            if waiting > 0:
                gaps.append(max((nxt - end).total_seconds() * 1000, 0.0))
    return gaps
