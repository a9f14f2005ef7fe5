"""Scenario: workers as `omoi up --workers 2` runs them, which the other scenarios do not.

Each worker serves every phase with `shell` and `agent` (ten consumers) and runs one task
at a time. Tickets have three chained 0.2 s shell tasks, one per phase (requirements →
design → implementation), all submitted at once. Reported: throughput, the share of the
workers' time spent running commands, and while other work was queued:
- the idle gap: how long a worker's slot stood free before its next claim (`idle_ms` of
  `task.started`: the time fetching takes);
- the command gap: from the end of one command to the same worker's next claim (the idle
  gap plus the worker's own work around a task: recording, the claim, spawning).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import time
from collections.abc import Callable
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
            await stack.bus.nc.publish(c.TRUSTED_SUBMIT_SUBJECT, json.dumps(ticket(i)).encode())
        await stack.bus.nc.flush()
        await asyncio.wait_for(done.wait(), timeout=600)
        elapsed = time.perf_counter() - start
        await sub.unsubscribe()

    runs = _runs(events)
    work = sum(duration.total_seconds() for _, _, duration in runs)
    idle = _idle_gaps(events)
    gaps = _command_gaps(runs, events)
    params = {"workers": WORKERS}
    return [
        Metric("default_worker", "tasks_per_s", len(runs) / elapsed, "tasks/s", params),
        Metric("default_worker", "busy_pct", 100 * work / (elapsed * WORKERS), "%", params),
        Metric("default_worker", "idle_gap_p50_ms", percentile(idle, 0.5), "ms", params),
        Metric("default_worker", "idle_gap_p99_ms", percentile(idle, 0.99), "ms", params),
        Metric("default_worker", "idle_gap_max_ms", max(idle, default=float("nan")), "ms", params),
        Metric("default_worker", "command_gap_p50_ms", percentile(gaps, 0.5), "ms", params),
        Metric("default_worker", "command_gap_p99_ms", percentile(gaps, 0.99), "ms", params),
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


def _backlog(events: list[Event]) -> Callable[[datetime], bool]:
    """Whether some task was queued and not yet started at a given moment."""
    queued = sorted(e.at for e in events if e.type == "task.queued")
    started = sorted(e.at for e in events if e.type == "task.started")

    def waiting(at: datetime) -> bool:
        return bisect.bisect_right(queued, at) > bisect.bisect_right(started, at)

    return waiting


def _idle_gaps(events: list[Event]) -> list[float]:
    """`idle_ms` of every start whose slot became free while work was waiting."""
    waiting = _backlog(events)
    out = []
    for e in events:
        if e.type == "task.started" and "idle_ms" in e.data:
            idle = float(e.data["idle_ms"])
            if waiting(e.at - timedelta(milliseconds=idle)):
                out.append(idle)
    return out


def _command_gaps(runs: list[tuple[str, datetime, timedelta]], events: list[Event]) -> list[float]:
    """Milliseconds from each command's end to its worker's next claim, while work waited."""
    waiting = _backlog(events)
    by_worker: dict[str, list[tuple[datetime, timedelta]]] = {}
    for worker, at, duration in runs:
        by_worker.setdefault(worker, []).append((at, duration))
    gaps = []
    for spans in by_worker.values():
        spans.sort()
        for (at, duration), (nxt, _) in itertools.pairwise(spans):
            end = at + duration
            if waiting(end):
                gaps.append(max((nxt - end).total_seconds() * 1000, 0.0))
    return gaps
